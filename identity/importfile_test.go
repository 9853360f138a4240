package identity

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestReadImportCSV(t *testing.T) {
	in := `# comment line
jid,sip,tel,name
alice@example.com,sip:alice@example.com;sip:alice@pbx.example.com,+15551230001,Alice
bob@example.com,,+1 555 123 0002; tel:+15551230003,"Bob, the builder"
carol@example.com
`
	recs, err := ReadImport(strings.NewReader(in), "people.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Identity{JID: "alice@example.com", SIP: []string{"sip:alice@example.com", "sip:alice@pbx.example.com"}, Tel: []string{"+15551230001"}, Name: "Alice"}, 3},
		{Identity{JID: "bob@example.com", Tel: []string{"+1 555 123 0002", "tel:+15551230003"}, Name: "Bob, the builder"}, 4},
		{Identity{JID: "carol@example.com"}, 5},
	}
	if !reflect.DeepEqual(recs, want) {
		t.Errorf("ReadImport =\n%+v\nwant\n%+v", recs, want)
	}
}

func TestReadImportCSVHeaderOrder(t *testing.T) {
	recs, err := ReadImport(strings.NewReader("name,tel,jid\nAlice,+15551230001,alice@example.com\n"), "x.csv")
	if err != nil {
		t.Fatal(err)
	}
	if got := recs[0].Identity; got.JID != "alice@example.com" || got.Name != "Alice" || got.Tel[0] != "+15551230001" {
		t.Errorf("header-ordered row = %+v", got)
	}
}

func TestReadImportErrorsNameLines(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"x.csv", "a@b.c,sip:a@b.c,+1555,A,extra\n", "x.csv:1: 5 columns, want at most 4"},
		{"x.csv", "jid,sip\nok@b.c,\"bad\"quote\n", "x.csv:2:"},
		{"x.yaml", "- jid: a@b.c\n  phone: 1\n", `x.yaml:2: unknown key "phone"`},
		{"x.yaml", "jid: a@b.c\n", "x.yaml:1: want a list of identities"},
		{"x.yaml", "- jid: [a]\n", "x.yaml:1: jid: want a string"},
		{"x.yaml", "- jid: a@b.c\n  jid: b@b.c\n", `x.yaml:2: duplicate key "jid"`},
	} {
		_, err := ReadImport(strings.NewReader(tc.in), tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadImport(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestExportRoundTrip(t *testing.T) {
	ids := []Identity{
		{JID: "alice@example.com", SIP: []string{"sip:alice@example.com"}, Tel: []string{"+15551230001", "+15551230002"}, Name: "Alice: \"the first\""},
		{JID: "bob@example.com"},
	}
	var buf bytes.Buffer
	if err := WriteExport(&buf, ids); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"export.yaml", "stdin"} {
		recs, err := ReadImport(bytes.NewReader(buf.Bytes()), name)
		if err != nil {
			t.Fatalf("ReadImport(export, %s) = %v\n%s", name, err, buf.String())
		}
		for i, r := range recs {
			if !r.Identity.Equal(ids[i]) && !(len(ids[i].SIP) == 0 && len(r.Identity.SIP) == 0 && r.Identity.JID == ids[i].JID) {
				t.Errorf("round trip %d = %+v, want %+v", i, r.Identity, ids[i])
			}
		}
	}
	buf.Reset()
	if err := WriteExport(&buf, nil); err != nil || buf.String() != "[]\n" {
		t.Errorf("WriteExport(nil) = %q, %v; want []", buf.String(), err)
	}
}

func FuzzReadImport(f *testing.F) {
	f.Add([]byte("jid,sip,tel,name\na@b.c,sip:a@b.c,+15551230001,A\n"), "x.csv")
	f.Add([]byte("- jid: a@b.c\n  sip: [sip:a@b.c]\n  tel: '+15551230001'\n"), "x.yaml")
	f.Add([]byte("\"a\n"), "x")
	f.Add([]byte("- [\n"), "x")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		recs, err := ReadImport(bytes.NewReader(data), name)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		ids := make([]Identity, len(recs))
		for i, r := range recs {
			ids[i] = r.Identity
		}
		if err := WriteExport(&buf, ids); err != nil {
			t.Fatalf("WriteExport: %v", err)
		}
		back, err := ReadImport(&buf, "again.yaml")
		if err != nil || len(back) != len(recs) {
			t.Fatalf("export of %d records reads back as %d, %v:\n%s", len(recs), len(back), err, buf.String())
		}
	})
}
