package component

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"mellium.im/xmlstream"
)

// node is one XML element held in memory: the unit of read-modify-write.
// Elements the component does not own (a vCard's name, photo, notes…) are
// kept as parsed and written back with the same names, attributes, children
// and character data (the same XML infoset; namespace prefixes and quoting
// are normalised, comments and processing instructions dropped).
type node struct {
	Name xml.Name
	Attr []xml.Attr // without namespace declarations
	Kids []any      // *node or string (character data)
}

// maxTreeDepth and maxTreeTokens bound what parseTree accepts.
const (
	maxTreeDepth  = 64
	maxTreeTokens = 1 << 20
)

var errTreeEOF = errors.New("component: xml: no element")

// parseTree reads tokens until it has consumed the first complete element
// of r and returns it. Tokens before that element are skipped.
func parseTree(r xml.TokenReader) (*node, error) {
	var stack []*node
	for i := 0; i < maxTreeTokens; i++ {
		tok, err := r.Token()
		if tok != nil {
			switch t := tok.(type) {
			case xml.StartElement:
				if len(stack) >= maxTreeDepth {
					return nil, errors.New("component: xml: too deep")
				}
				n := &node{Name: t.Name}
				for _, a := range t.Attr {
					if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
						continue
					}
					n.Attr = append(n.Attr, a)
				}
				if len(stack) > 0 {
					p := stack[len(stack)-1]
					p.Kids = append(p.Kids, n)
				}
				stack = append(stack, n)
			case xml.EndElement:
				if len(stack) == 0 {
					break
				}
				n := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return n, nil
				}
			case xml.CharData:
				if len(stack) == 0 {
					break
				}
				p := stack[len(stack)-1]
				if k := len(p.Kids); k > 0 {
					if s, ok := p.Kids[k-1].(string); ok {
						p.Kids[k-1] = s + string(t)
						break
					}
				}
				p.Kids = append(p.Kids, string(t))
			}
		}
		if err == io.EOF {
			if len(stack) > 0 {
				return nil, fmt.Errorf("component: xml: %w", io.ErrUnexpectedEOF)
			}
			return nil, errTreeEOF
		}
		if err != nil {
			return nil, fmt.Errorf("component: xml: %w", err)
		}
	}
	return nil, errors.New("component: xml: too many tokens")
}

// parseTreeString parses the first element of s.
func parseTreeString(s string) (*node, error) {
	return parseTree(xml.NewDecoder(strings.NewReader(s)))
}

// elem returns a new element in namespace space.
func elem(space, local string, kids ...any) *node {
	return &node{Name: xml.Name{Space: space, Local: local}, Kids: kids}
}

// withAttr appends an attribute and returns n.
func (n *node) withAttr(local, value string) *node {
	n.Attr = append(n.Attr, xml.Attr{Name: xml.Name{Local: local}, Value: value})
	return n
}

// attr returns the value of the unqualified attribute local.
func (n *node) attr(local string) string {
	for _, a := range n.Attr {
		if a.Name.Space == "" && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// child returns the first child element named local in namespace space
// (any namespace if space is "*"), or nil.
func (n *node) child(space, local string) *node {
	if n == nil {
		return nil
	}
	for _, k := range n.Kids {
		if c, ok := k.(*node); ok && c.Name.Local == local && (space == "*" || c.Name.Space == space) {
			return c
		}
	}
	return nil
}

// elements returns the child elements of n.
func (n *node) elements() []*node {
	if n == nil {
		return nil
	}
	var out []*node
	for _, k := range n.Kids {
		if c, ok := k.(*node); ok {
			out = append(out, c)
		}
	}
	return out
}

// text returns the concatenated character data directly inside n.
func (n *node) text() string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	for _, k := range n.Kids {
		if s, ok := k.(string); ok {
			b.WriteString(s)
		}
	}
	return b.String()
}

// clone returns a deep copy of n.
func (n *node) clone() *node {
	if n == nil {
		return nil
	}
	c := &node{Name: n.Name, Attr: append([]xml.Attr(nil), n.Attr...), Kids: make([]any, len(n.Kids))}
	for i, k := range n.Kids {
		if e, ok := k.(*node); ok {
			c.Kids[i] = e.clone()
		} else {
			c.Kids[i] = k
		}
	}
	return c
}

// tokens returns n as a token stream for a mellium session.
func (n *node) tokens() xml.TokenReader {
	var parts []xml.TokenReader
	for _, k := range n.Kids {
		switch k := k.(type) {
		case *node:
			parts = append(parts, k.tokens())
		case string:
			parts = append(parts, xmlstream.Token(xml.CharData(k)))
		}
	}
	return xmlstream.Wrap(xmlstream.MultiReader(parts...), xml.StartElement{Name: n.Name, Attr: n.Attr})
}

// String serialises n canonically: xmlns only where the namespace changes,
// attributes in their original order with single quotes, character data
// escaped. Two equal trees give equal strings; the result parses back to
// the same tree.
func (n *node) String() string {
	var b strings.Builder
	n.write(&b, "")
	return b.String()
}

func (n *node) write(b *strings.Builder, parentNS string) {
	b.WriteByte('<')
	b.WriteString(n.Name.Local)
	if n.Name.Space != parentNS {
		b.WriteString(" xmlns='")
		escapeAttr(b, n.Name.Space)
		b.WriteByte('\'')
	}
	prefixes := 0
	for _, a := range n.Attr {
		b.WriteByte(' ')
		switch a.Name.Space {
		case "":
		case "xml", "http://www.w3.org/XML/1998/namespace":
			b.WriteString("xml:")
		default:
			p := fmt.Sprintf("a%d", prefixes)
			prefixes++
			b.WriteString("xmlns:" + p + "='")
			escapeAttr(b, a.Name.Space)
			b.WriteString("' " + p + ":")
		}
		b.WriteString(a.Name.Local)
		b.WriteString("='")
		escapeAttr(b, a.Value)
		b.WriteByte('\'')
	}
	if len(n.Kids) == 0 {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	for _, k := range n.Kids {
		switch k := k.(type) {
		case *node:
			k.write(b, n.Name.Space)
		case string:
			escapeText(b, k, false)
		}
	}
	b.WriteString("</")
	b.WriteString(n.Name.Local)
	b.WriteByte('>')
}

func escapeAttr(b *strings.Builder, s string) { escapeText(b, s, true) }

// escapeText writes s with &, < and > escaped (and, in attributes, quotes
// and whitespace that attribute normalisation would change). Line breaks in
// character data stay literal, so pretty-printed documents stay readable.
func escapeText(b *strings.Builder, s string, attr bool) {
	for _, r := range s {
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '\r':
			b.WriteString("&#xD;")
		case attr && r == '\'':
			b.WriteString("&apos;")
		case attr && r == '\n':
			b.WriteString("&#xA;")
		case attr && r == '\t':
			b.WriteString("&#x9;")
		default:
			b.WriteRune(r)
		}
	}
}
