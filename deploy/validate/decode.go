package validate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
)

// scheme knows the API groups the deployment uses, and only those: any
// other kind is reported as unknown.
var scheme = runtime.NewScheme()

// strict decodes YAML into the typed objects of scheme, failing on unknown
// and duplicate fields.
var strict *json.Serializer

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	utilruntime.Must(networkingv1.AddToScheme(scheme))
	strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
}

// Bundle holds the objects of one deployment, by kind, in file order.
type Bundle struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	Claims          []*corev1.PersistentVolumeClaim
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// SplitDocuments cuts a YAML stream at its document separators (a line
// that is "---", optionally followed by a comment) and returns the
// documents that hold more than blank lines and comments.
func SplitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	flush := func() {
		if hasContent(cur) {
			docs = append(docs, cur)
		}
		cur = nil
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if isSeparator(line) {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

// isSeparator reports whether line starts a new document.
func isSeparator(line []byte) bool {
	rest, ok := bytes.CutPrefix(bytes.TrimRight(line, " \t\r\n"), []byte("---"))
	if !ok {
		return false
	}
	return len(rest) == 0 || rest[0] == ' ' && bytes.HasPrefix(
		bytes.TrimLeft(rest, " \t"), []byte("#"))
}

// hasContent reports whether doc has a line other than blanks and comments.
func hasContent(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' {
			return true
		}
	}
	return false
}

// Decode decodes one YAML document strictly into its typed API object.
func Decode(doc []byte) (runtime.Object, error) {
	obj, gvk, err := strict.Decode(doc, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if gvk == nil || gvk.Kind == "" {
		return nil, errors.New("decode: no kind")
	}
	return obj, nil
}

// Add files obj under its kind.
func (b *Bundle) Add(obj runtime.Object) error {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		b.Deployments = append(b.Deployments, o)
	case *corev1.Service:
		b.Services = append(b.Services, o)
	case *corev1.ConfigMap:
		b.ConfigMaps = append(b.ConfigMaps, o)
	case *corev1.Secret:
		b.Secrets = append(b.Secrets, o)
	case *corev1.PersistentVolumeClaim:
		b.Claims = append(b.Claims, o)
	case *networkingv1.NetworkPolicy:
		b.NetworkPolicies = append(b.NetworkPolicies, o)
	default:
		return fmt.Errorf("unexpected kind %s", obj.GetObjectKind().GroupVersionKind().Kind)
	}
	return nil
}

// AddYAML decodes every document of a YAML stream into b; name labels
// errors.
func (b *Bundle) AddYAML(name string, data []byte) error {
	for i, doc := range SplitDocuments(data) {
		obj, err := Decode(doc)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i+1, err)
		}
		if err := b.Add(obj); err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i+1, err)
		}
	}
	return nil
}

// LoadDir decodes every *.yaml and *.yml file of dir, in name order.
func LoadDir(dir string) (*Bundle, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load manifests: %w", err)
	}
	var names []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("load manifests: no YAML files in %s", dir)
	}
	sort.Strings(names)
	b := &Bundle{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("load manifests: %w", err)
		}
		if err := b.AddYAML(n, data); err != nil {
			return nil, fmt.Errorf("load manifests: %w", err)
		}
	}
	return b, nil
}

// ConfigMap returns the ConfigMap named name, or nil.
func (b *Bundle) ConfigMap(name string) *corev1.ConfigMap {
	for _, c := range b.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Secret returns the Secret named name, or nil.
func (b *Bundle) Secret(name string) *corev1.Secret {
	for _, s := range b.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Claim returns the PersistentVolumeClaim named name, or nil.
func (b *Bundle) Claim(name string) *corev1.PersistentVolumeClaim {
	for _, c := range b.Claims {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// SecretKeys returns the file names a Secret provides, from data and
// stringData.
func SecretKeys(s *corev1.Secret) []string {
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	for k := range s.StringData {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// SecretValue returns one file's content of a Secret.
func SecretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}
