# Container image for cusax-gw: a static binary on a distroless base.
#
#	docker build \
#	  --build-arg VERSION="$(git describe --tags --always --dirty)" \
#	  --build-arg REVISION="$(git rev-parse HEAD)" \
#	  --build-arg BASE_IMAGE=REGISTRY/distroless/static-debian12:nonroot \
#	  -t cusax-gw .
#
# Both images are build arguments, written without a registry host so that
# they resolve through whatever registry or mirror the builder is set up
# for. BASE_IMAGE must be Google's distroless "static-debian12:nonroot"
# image (or any image with /etc/passwd naming uid 65532 "nonroot", CA
# certificates and tzdata); set it to where your registry serves that image.
# See docs/deploy.md for running it (host networking: the RTP port range).
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
# The same toolchain that scripts/test.sh tests with: Go 1.26.8 has
# standard-library vulnerabilities, so the go command fetches go1.27.3 as a
# module (go.mod keeps `go 1.26`). GOPROXY may point at a module mirror.
ARG GOTOOLCHAIN=go1.27.3
ARG GOPROXY
ENV GOTOOLCHAIN=${GOTOOLCHAIN} GOPROXY=${GOPROXY} GOFLAGS=-mod=readonly CGO_ENABLED=0
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go version
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
	-o /out/cusax-gw ./cmd/cusax-gw
# State directory for the volume, owned by distroless' nonroot (65532).
RUN mkdir -p /out/state /out/doc && cp config.example.yaml /out/doc/

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cusax-gw" \
	org.opencontainers.image.description="XMPP/SIP gateway (RFC 7081): SIP B2BUA, RTP relay, XMPP component" \
	org.opencontainers.image.source="https://github.com/cusax-gw/cusax-gw" \
	org.opencontainers.image.version="${VERSION}" \
	org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/cusax-gw /cusax-gw
COPY --from=build /out/doc/config.example.yaml /usr/share/doc/cusax-gw/config.example.yaml
COPY --from=build --chown=65532:65532 /out/state /var/lib/cusax-gw
USER nonroot
WORKDIR /var/lib/cusax-gw
VOLUME /var/lib/cusax-gw
# SIP (UDP, TCP, TLS), admin HTTP (/metrics, /healthz, /readyz, /api/),
# RTP relay ports (rtp.port_min..rtp.port_max). With --network host, as
# docs/deploy.md recommends, these are documentation only.
EXPOSE 5060/udp 5060/tcp 5061/tcp 9464/tcp 20000-29999/udp
# SIGTERM drains calls (shutdown.drain, 30s by default); give the runtime
# a longer stop timeout than that (docker run --stop-timeout 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/cusax-gw", "run"]
CMD ["-config", "/etc/cusax-gw/config.yaml"]
