package config

import (
	"net/url"
	"os"
	"reflect"
	"regexp"
	"testing"
)

const examplePath = "../../config.example.toml"

// exampleEnv is what config.example.toml references.
var exampleEnv = []string{"ZIMMER_SERVICE_TOKEN=example-token"}

// TestExampleParses checks that the documented example is valid as is.
func TestExampleParses(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, exampleEnv)
	if err != nil {
		t.Fatalf("config.example.toml does not parse:\n%v", err)
	}

	// The sections that document their defaults must hold exactly them.
	d := Default()
	app, defApp := c.App, d.App
	app.Probes, app.URL, defApp.URL = nil, nil, nil
	auth, defAuth := c.Auth, d.Auth
	auth.Tokens, defAuth.Tokens = nil, nil
	sections := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, d.Listen},
		{"log", c.Log, d.Log},
		{"ledger", c.Ledger, d.Ledger},
		{"tls", c.TLS, d.TLS},
		{"egress", c.Egress, d.Egress},
		{"automation.platform_url", c.Automation.PlatformURL, d.Automation.PlatformURL},
		{"app", app, defApp},
		{"app.url", c.App.URL.String(), d.App.URL.String()},
		{"auth", auth, defAuth},
		{"zimmer.prefixes", c.Zimmer.Prefixes, d.Zimmer.Prefixes},
		{"zimmer.service_url", c.Zimmer.ServiceURL, d.Zimmer.ServiceURL},
		{"app.probe[0]", withoutName(c.App.Probes[0]), withoutName(defaultProbe())},
		{"route[0].meter.units", c.Routes[0].Meter.Units, defaultMeter().Units},
	}
	for _, s := range sections {
		if !reflect.DeepEqual(s.got, s.want) {
			t.Errorf("%s: example has %+v, default is %+v", s.name, s.got, s.want)
		}
	}
}

func withoutName(p Probe) Probe {
	p.Name, p.Path = "", ""
	return p
}

// TestExampleDocumentsEveryKey checks that every key the Config reads
// appears in config.example.toml, so the example cannot drift.
func TestExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	index := regexp.MustCompile(`\[\d+\]`)
	for p := range indexLines(data) {
		written[index.ReplaceAllString(p, "")] = true
	}
	keys := schemaKeys("", reflect.TypeFor[Config]())
	if len(keys) < 50 {
		t.Fatalf("found only %d keys in Config: the schema walk is broken", len(keys))
	}
	for _, k := range keys {
		if !written[k] {
			t.Errorf("config.example.toml does not document %s", k)
		}
	}
}

// schemaKeys lists the key path of every leaf the decoder reads, array
// entries without their index.
func schemaKeys(prefix string, t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		k := tomlKey(f)
		if k == "" {
			continue
		}
		p := joinKey(prefix, k)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		leaf := ft.Kind() != reflect.Struct || ft == reflect.TypeFor[url.URL]() ||
			ft == reflect.TypeFor[Call]() || ft == reflect.TypeFor[Extract]() ||
			ft == reflect.TypeFor[UserRef]() || ft == reflect.TypeFor[Token]() ||
			ft == reflect.TypeFor[Secret]()
		if leaf {
			keys = append(keys, p)
			continue
		}
		keys = append(keys, schemaKeys(p, ft)...)
	}
	return keys
}
