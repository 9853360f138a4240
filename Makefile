# Shortcuts; scripts/test.sh is the real thing (see the README).
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)

.PHONY: build test lint
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)" -o cusax-gw ./cmd/cusax-gw
test:
	bash scripts/test.sh
lint:
	bash scripts/test.sh -lint
