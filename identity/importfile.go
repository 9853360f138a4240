package identity

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Record is one identity read from an import file, with the line it
// started on.
type Record struct {
	Identity Identity
	Line     int
}

// LineError is a problem on one line of an import file.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// MaxImportFile bounds an import file.
const MaxImportFile = 256 << 20

// ReadImport parses an import file: CSV (columns jid,sip,tel,name, an
// optional header row naming them in any order, repeated values separated
// by ';', '#' comment lines) or a YAML list of objects with the keys jid,
// sip, tel and name (as Export writes). The format comes from the name's
// extension (.csv, .yaml, .yml), else from the content. Values are not
// normalised here; every syntax problem is reported, each with its line.
func ReadImport(r io.Reader, name string) ([]Record, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxImportFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxImportFile {
		return nil, &LineError{File: name, Msg: fmt.Sprintf("file larger than %d bytes", MaxImportFile)}
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return readCSV(data, name)
	case ".yaml", ".yml":
		return readYAML(data, name)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	for bytes.HasPrefix(trimmed, []byte("#")) { // skip leading comments
		if i := bytes.IndexByte(trimmed, '\n'); i >= 0 {
			trimmed = bytes.TrimLeft(trimmed[i+1:], " \t\r\n")
		} else {
			trimmed = nil
		}
	}
	if bytes.HasPrefix(trimmed, []byte("-")) || bytes.HasPrefix(trimmed, []byte("[")) {
		return readYAML(data, name)
	}
	return readCSV(data, name)
}

var csvColumns = []string{"jid", "sip", "tel", "name"}

func readCSV(data []byte, name string) ([]Record, error) {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cols := csvColumns
	var out []Record
	var errs []error
	first := true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				errs = append(errs, &LineError{File: name, Line: pe.Line, Msg: pe.Err.Error()})
				if pe.Err == csv.ErrQuote || pe.Err == csv.ErrBareQuote {
					continue
				}
			}
			return nil, errors.Join(append(errs, err)...)
		}
		line, _ := cr.FieldPos(0)
		if first {
			first = false
			if isHeader(rec) {
				cols = nil
				seen := map[string]bool{}
				for _, h := range rec {
					h = strings.ToLower(strings.TrimSpace(h))
					if seen[h] {
						errs = append(errs, &LineError{File: name, Line: line, Msg: fmt.Sprintf("header names column %q twice", h)})
					}
					seen[h] = true
					cols = append(cols, h)
				}
				if !seen["jid"] {
					errs = append(errs, &LineError{File: name, Line: line, Msg: "header has no jid column"})
				}
				continue
			}
		}
		if len(rec) > len(cols) {
			errs = append(errs, &LineError{File: name, Line: line, Msg: fmt.Sprintf("%d columns, want at most %d (%s)", len(rec), len(cols), strings.Join(cols, ","))})
			continue
		}
		var id Identity
		for i, v := range rec {
			v = strings.TrimSpace(v)
			switch cols[i] {
			case "jid":
				id.JID = v
			case "sip":
				id.SIP = splitList(v)
			case "tel":
				id.Tel = splitList(v)
			case "name":
				id.Name = v
			}
		}
		out = append(out, Record{Identity: id, Line: line})
	}
	return out, errors.Join(errs...)
}

func isHeader(rec []string) bool {
	for _, h := range rec {
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "jid", "sip", "tel", "name":
		default:
			return false
		}
	}
	return len(rec) > 0
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ";") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func readYAML(data []byte, name string) ([]Record, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &LineError{File: name, Line: yamlErrLine(err), Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.SequenceNode {
		return nil, &LineError{File: name, Line: root.Line, Msg: "want a list of identities"}
	}
	var out []Record
	var errs []error
	bad := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, &LineError{File: name, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
	}
	for _, item := range root.Content {
		if item.Kind != yaml.MappingNode {
			bad(item, "want an object with jid, sip, tel, name")
			continue
		}
		var id Identity
		seen := map[string]bool{}
		ok := true
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			if seen[k.Value] {
				bad(k, "duplicate key %q", k.Value)
				ok = false
				continue
			}
			seen[k.Value] = true
			switch k.Value {
			case "jid", "name":
				if v.Kind != yaml.ScalarNode {
					bad(v, "%s: want a string", k.Value)
					ok = false
					continue
				}
				if k.Value == "jid" {
					id.JID = v.Value
				} else {
					id.Name = v.Value
				}
			case "sip", "tel":
				list, err := yamlStrings(v)
				if err != nil {
					bad(v, "%s: %v", k.Value, err)
					ok = false
					continue
				}
				if k.Value == "sip" {
					id.SIP = list
				} else {
					id.Tel = list
				}
			default:
				bad(k, "unknown key %q (want jid, sip, tel, name)", k.Value)
				ok = false
			}
		}
		if ok {
			out = append(out, Record{Identity: id, Line: item.Line})
		}
	}
	return out, errors.Join(errs...)
}

func yamlStrings(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return splitList(n.Value), nil
	case yaml.SequenceNode:
		out := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return nil, errors.New("want a list of strings")
			}
			out = append(out, c.Value)
		}
		return out, nil
	}
	return nil, errors.New("want a string or a list of strings")
}

func yamlErrLine(err error) int {
	var line int
	if _, e := fmt.Sscanf(strings.TrimPrefix(err.Error(), "yaml: "), "line %d:", &line); e == nil {
		return line
	}
	return 0
}

// exportItem fixes the key order and shape of an exported identity.
type exportItem struct {
	JID  string   `yaml:"jid"`
	SIP  []string `yaml:"sip"`
	Tel  []string `yaml:"tel"`
	Name string   `yaml:"name"`
}

// WriteExport writes ids as the YAML list that ReadImport reads back.
func WriteExport(w io.Writer, ids []Identity) error {
	items := make([]exportItem, len(ids))
	for i, id := range ids {
		items[i] = exportItem{JID: id.JID, SIP: id.SIP, Tel: id.Tel, Name: id.Name}
		if items[i].SIP == nil {
			items[i].SIP = []string{}
		}
		if items[i].Tel == nil {
			items[i].Tel = []string{}
		}
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if len(items) == 0 {
		_, err := io.WriteString(w, "[]\n")
		return err
	}
	if err := enc.Encode(items); err != nil {
		return err
	}
	return enc.Close()
}
