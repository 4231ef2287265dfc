// helm_render renders a Helm chart the way `helm template` does, without Helm and without a
// cluster: Go's text/template with sprig's function map (github.com/Masterminds/sprig, the
// library Helm uses) and Helm's own additions, values from the chart's values.yaml coalesced with
// -f files and --set / --set-string overrides, and the built-in objects .Release, .Chart,
// .Capabilities, .Template and .Files. Debian 12 ships no helm binary; it ships the libraries
// Helm is made of (golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev), which this
// program is built from (GOPATH mode, tests/deploy/CMakeLists.txt).
//
//	helm_render [-f values.yaml]... [--set k.e.y=v[,k2=v2]]... [--set-string k=v]...
//	            [--release NAME] [--namespace NS] [--kube-version v1.29.0] [--notes] CHART_DIR
//
// Output (stdout): every non-empty manifest as "---\n# Source: CHART/templates/FILE\n" and its
// text, in file-name order (helm template orders by kind; nothing here depends on the order);
// with --notes, NOTES.txt rendered instead. Exit status 1 with the error on stderr when a
// template fails (fail, required, a parse or execution error) or kubeVersion is not met.
//
// Reproduced from Helm 3 (helm.sh/helm/v3 pkg/engine, pkg/chartutil, pkg/strvals):
//   - functions: sprig's TxtFuncMap without env and expandenv, plus toYaml, fromYaml,
//     fromYamlArray, toJson, fromJson, fromJsonArray, include, tpl, required, lookup (always an
//     empty map, as in `helm template`);
//   - missingkey=zero and "<no value>" removed from the output;
//   - values parsed with sigs.k8s.io/yaml (numbers become float64, as in Helm), coalesced
//     recursively, a null override deleting the key;
//   - --set: comma-separated key=value pairs, dotted keys, "true"/"false"/"null" and integers
//     typed, anything else a string; list indexes (a[0]=x) and escapes are not supported.
//   - partials (templates/_*) define templates and produce no output.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	semver "github.com/Masterminds/semver" // semver/v3 (GOPATH mode drops /v3)
	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Chart mirrors the fields of Helm's chart.Metadata that templates read (.Chart.Name, ...).
type Chart struct {
	APIVersion  string   `json:"apiVersion"`
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	AppVersion  string   `json:"appVersion"`
	Description string   `json:"description"`
	KubeVersion string   `json:"kubeVersion"`
	Type        string   `json:"type"`
	Keywords    []string `json:"keywords"`
	Home        string   `json:"home"`
}

type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
}

type Release struct {
	Name      string
	Namespace string
	Revision  int
	IsInstall bool
	IsUpgrade bool
	Service   string
}

// Files gives templates the chart's other files (.Files.Get), as Helm does.
type Files map[string][]byte

func (f Files) Get(name string) string { return string(f[name]) }
func (f Files) GetBytes(name string) []byte {
	return f[name]
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "helm_render: "+format+"\n", args...)
	os.Exit(1)
}

func readYAMLMap(file string) map[string]interface{} {
	data, err := os.ReadFile(file)
	if err != nil {
		die("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		die("%s: %v", file, err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out
}

// coalesce puts src over dst, recursively for maps; a nil in src deletes the key (Helm's
// chartutil.CoalesceValues with user values over the chart's defaults).
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// parseSet turns "a.b=1,c=x" into a nested map (a subset of Helm's strvals, see the top).
func parseSet(expr string, typed bool) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	for _, pair := range strings.Split(expr, ",") {
		eq := strings.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("--set %q: want key=value", pair)
		}
		key, raw := pair[:eq], pair[eq+1:]
		if strings.ContainsAny(key, "[]\\") {
			return nil, fmt.Errorf("--set %q: list indexes and escapes are not supported", pair)
		}
		var value interface{} = raw
		if typed {
			switch {
			case raw == "true":
				value = true
			case raw == "false":
				value = false
			case raw == "null":
				value = nil
			default:
				if n, err := strconv.ParseInt(raw, 10, 64); err == nil && (raw == "0" || raw[0] != '0') {
					value = n
				}
			}
		}
		parts := strings.Split(key, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = value
	}
	return out, nil
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["toYamlPretty"] = toYAML
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromYamlArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := yaml.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	// include and tpl need the template set: placeholders until it exists (Helm does the same).
	f["include"] = func(string, interface{}) (string, error) { return "", errors.New("not ready") }
	f["tpl"] = func(string, interface{}) (string, error) { return "", errors.New("not ready") }
	return f
}

func main() {
	var valueFiles, sets, setStrings multiFlag
	flag.Var(&valueFiles, "f", "values file (repeatable; later ones win)")
	flag.Var(&valueFiles, "values", "same as -f")
	flag.Var(&sets, "set", "key=value[,key=value] (repeatable)")
	flag.Var(&setStrings, "set-string", "key=value, value kept a string (repeatable)")
	releaseName := flag.String("release", "tollgate", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "v1.29.0", "Kubernetes version for .Capabilities and kubeVersion")
	notes := flag.Bool("notes", false, "print NOTES.txt rendered instead of the manifests")
	flag.Parse()
	if flag.NArg() != 1 {
		die("usage: helm_render [-f values.yaml]... [--set k=v]... [--set-string k=v]... [--release NAME] [--namespace NS] [--kube-version V] [--notes] CHART_DIR")
	}
	chartDir := flag.Arg(0)

	var chart Chart
	chartYAML, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		die("%v", err)
	}
	if err := yaml.UnmarshalStrict(chartYAML, &chart); err != nil {
		die("Chart.yaml: %v", err)
	}
	if chart.APIVersion != "v2" || chart.Name == "" || chart.Version == "" {
		die("Chart.yaml: apiVersion v2, name and version are required")
	}
	if _, err := semver.StrictNewVersion(chart.Version); err != nil {
		die("Chart.yaml: version %q is not SemVer 2: %v", chart.Version, err)
	}

	kv, err := semver.NewVersion(*kubeVersion)
	if err != nil {
		die("--kube-version: %v", err)
	}
	if chart.KubeVersion != "" {
		c, err := semver.NewConstraint(chart.KubeVersion)
		if err != nil {
			die("Chart.yaml kubeVersion: %v", err)
		}
		if !c.Check(kv) {
			die("chart requires kubeVersion %s, which is incompatible with Kubernetes %s", chart.KubeVersion, *kubeVersion)
		}
	}

	values := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	for _, f := range valueFiles {
		values = coalesce(values, readYAMLMap(f))
	}
	for _, s := range sets {
		m, err := parseSet(s, true)
		if err != nil {
			die("%v", err)
		}
		values = coalesce(values, m)
	}
	for _, s := range setStrings {
		m, err := parseSet(s, false)
		if err != nil {
			die("%v", err)
		}
		values = coalesce(values, m)
	}

	// Every file of the chart: templates by name "CHART/templates/...", the rest for .Files.
	files := Files{}
	var templateNames []string
	err = filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "templates/") {
			templateNames = append(templateNames, rel)
		} else {
			files[rel] = data
		}
		return nil
	})
	if err != nil {
		die("%v", err)
	}
	sort.Strings(templateNames)

	root := template.New("gotpl").Option("missingkey=zero")
	funcs := funcMap()
	root.Funcs(funcs)
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 1000 {
			return "", fmt.Errorf("include %q: recursion too deep", name)
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t = t.New("tpl").Option("missingkey=zero")
		if _, err := t.Parse(text); err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	root.Funcs(funcs)

	sources := map[string]string{}
	for _, rel := range templateNames {
		data, err := os.ReadFile(filepath.Join(chartDir, filepath.FromSlash(rel)))
		if err != nil {
			die("%v", err)
		}
		name := path.Join(chart.Name, rel)
		sources[name] = string(data)
		if _, err := root.New(name).Parse(string(data)); err != nil {
			die("parse error: %v", err)
		}
	}

	major, minor := strconv.FormatUint(kv.Major(), 10), strconv.FormatUint(kv.Minor(), 10)
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": Release{Name: *releaseName, Namespace: *namespace, Revision: 1, IsInstall: true,
			Service: "Helm"},
		"Capabilities": Capabilities{
			KubeVersion: KubeVersion{Version: "v" + kv.String(), Major: major, Minor: minor, GitVersion: "v" + kv.String()},
			APIVersions: VersionSet{"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
				"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"},
		},
		"Files": files,
	}

	render := func(name string) (string, error) {
		scope := map[string]interface{}{}
		for k, v := range top {
			scope[k] = v
		}
		scope["Template"] = map[string]interface{}{"Name": name, "BasePath": path.Join(chart.Name, "templates")}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, scope); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}

	var out strings.Builder
	for _, rel := range templateNames {
		name := path.Join(chart.Name, rel)
		base := path.Base(rel)
		isNotes := rel == "templates/NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != *notes {
			continue
		}
		if !isNotes && !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") &&
			!strings.HasSuffix(base, ".tpl") {
			continue
		}
		text, err := render(name)
		if err != nil {
			die("%v", err)
		}
		if isNotes {
			out.WriteString(text)
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, strings.TrimRight(text, "\n"))
	}
	fmt.Print(out.String())
}
