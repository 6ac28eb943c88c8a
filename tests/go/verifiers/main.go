// Command verifiers runs the reference values cgsc wrote through Google's verifier
// libraries as Debian packages them (go-sev-guest 0.13, go-tdx-guest 0.3.1): it loads the
// config with the libraries' own protobuf types (prototext and protojson), builds
// attestation evidence whose fields are the manifest's prediction, signs it with
// test-only keys, and runs the libraries' verify and validate on that evidence and on
// copies with one field changed. The evidence files are left in -out for the libraries'
// tools/check CLIs; the results are printed as JSON. See README.md.
//
//	verifiers snp -manifest M -config C.textproto -jsonconfig C.json -out DIR
//	verifiers tdx -manifest M -config C.textproto -jsonconfig C.json -xfam 0x... -out DIR
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// Case is one piece of evidence and what the libraries said about it.
type Case struct {
	Name     string `json:"name"`
	Field    string `json:"field"`    // the predicted field changed; "" for the prediction itself
	Evidence string `json:"evidence"` // for the CLI: report + certificate table (SNP), quote (TDX)
	Report   string `json:"report"`   // the bare report or quote, for cgsc verify
	Version  int    `json:"version"`
	Verified bool   `json:"verified"` // the library's verify (signature, chain) passed
	Accepted bool   `json:"accepted"` // verify and validate passed
	Error    string `json:"error"`
}

// Result is what the harness prints.
type Result struct {
	ConfigsEqual bool   `json:"configs_equal"` // textproto and protojson load to the same message
	Roots        string `json:"roots"`         // the test-only roots the CLI must trust
	Cases        []Case `json:"cases"`
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "verifiers: "+format+"\n", args...)
	os.Exit(2)
}

// report returns manifest.json's attestation.report.
func report(path string) map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		die("%v", err)
	}
	var doc struct {
		Attestation struct {
			Report map[string]any `json:"report"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		die("%s: %v", path, err)
	}
	if doc.Attestation.Report == nil {
		die("%s has no attestation.report", path)
	}
	return doc.Attestation.Report
}

// hexField decodes a predicted byte field; nil when the manifest does not predict it.
func hexField(r map[string]any, name string, size int) []byte {
	v, ok := r[name].(string)
	if !ok {
		return nil
	}
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != size {
		die("manifest report %s: %q is not %d bytes of hex", name, v, size)
	}
	return b
}

// wordField decodes a predicted "0x..." word.
func wordField(r map[string]any, name string) (uint64, bool) {
	v, ok := r[name].(string)
	if !ok {
		return 0, false
	}
	w, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		die("manifest report %s: %q is not a 64-bit word", name, v)
	}
	return w, true
}

// loadConfig reads the same config from its textproto and protojson files into `text` and
// `js`, as the libraries' CLIs (prototext) and protojson readers do; true when equal.
func loadConfig(textPath, jsonPath string, text, js proto.Message) bool {
	t, err := os.ReadFile(textPath)
	if err != nil {
		die("%v", err)
	}
	if err := prototext.Unmarshal(t, text); err != nil {
		die("%s: %v", textPath, err)
	}
	j, err := os.ReadFile(jsonPath)
	if err != nil {
		die("%v", err)
	}
	if err := protojson.Unmarshal(j, js); err != nil {
		die("%s: %v", jsonPath, err)
	}
	return proto.Equal(text, js)
}

func flip(b []byte) []byte {
	out := append([]byte(nil), b...)
	out[len(out)-1] ^= 0x01
	return out
}

func write(path string, data []byte) {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		die("%v", err)
	}
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "snp" && os.Args[1] != "tdx") {
		die("usage: verifiers snp|tdx -manifest M -config C.textproto -jsonconfig C.json [-xfam 0x...] -out DIR")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	manifest := fs.String("manifest", "", "manifest.json cgsc wrote")
	config := fs.String("config", "", "the .textproto config cgsc wrote")
	jsonConfig := fs.String("jsonconfig", "", "the same config as protojson")
	xfam := fs.String("xfam", "", "tdx: the XFAM this config is for (default: the manifest's)")
	out := fs.String("out", "", "directory for the evidence files")
	fs.Parse(os.Args[2:])
	if *manifest == "" || *config == "" || *jsonConfig == "" || *out == "" {
		die("-manifest, -config, -jsonconfig and -out are required")
	}
	var result Result
	if os.Args[1] == "snp" {
		result = runSnp(report(*manifest), *config, *jsonConfig, *out)
	} else {
		result = runTdx(report(*manifest), *config, *jsonConfig, *xfam, *out)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(result); err != nil {
		die("%v", err)
	}
}
