package main

import (
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	checkpb "github.com/google/go-sev-guest/proto/check"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	test "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
)

// ATTESTATION_REPORT offsets: AMD SEV-SNP Firmware ABI Specification (56860), section 7.3,
// table "ATTESTATION_REPORT Structure".
const (
	offVersion     = 0x000
	offGuestSvn    = 0x004
	offPolicy      = 0x008
	offFamilyID    = 0x010
	offImageID     = 0x020
	offVmpl        = 0x030
	offSigAlgo     = 0x034
	offSignerInfo  = 0x048
	offReportData  = 0x050
	offMeasurement = 0x090
	offHostData    = 0x0C0
	offIDKey       = 0x0E0
	offAuthorKey   = 0x110
	offCpuidFms    = 0x188 // versions 3 and later

	bitSMT       = 16
	bitMigrateMA = 18
	bitDebug     = 19
)

// snpPrediction is what manifest.json predicts for the report.
type snpPrediction struct {
	policy                                 uint64
	guestSvn                               uint32
	familyID, imageID, measurement         []byte
	hostData, idKeyDigest, authorKeyDigest []byte
}

func snpFromManifest(r map[string]any) snpPrediction {
	policy, ok := wordField(r, "policy")
	if !ok {
		die("manifest report has no policy")
	}
	p := snpPrediction{
		policy:          policy,
		familyID:        hexField(r, "family_id", abi.FamilyIDSize),
		imageID:         hexField(r, "image_id", abi.ImageIDSize),
		measurement:     hexField(r, "measurement", abi.MeasurementSize),
		hostData:        hexField(r, "host_data", abi.HostDataSize),
		idKeyDigest:     hexField(r, "id_key_digest", abi.IDKeyDigestSize),
		authorKeyDigest: hexField(r, "author_key_digest", abi.AuthorKeyDigestSize),
	}
	if p.measurement == nil {
		die("manifest report has no measurement")
	}
	if svn, ok := r["guest_svn"].(float64); ok {
		p.guestSvn = uint32(svn)
	}
	return p
}

// raw lays the prediction out as an unsigned report of the given version.
func (p snpPrediction) raw(version uint32, product *spb.SevProduct) []byte {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[offVersion:], version)
	binary.LittleEndian.PutUint32(r[offGuestSvn:], p.guestSvn)
	binary.LittleEndian.PutUint64(r[offPolicy:], p.policy)
	copy(r[offFamilyID:], p.familyID)
	copy(r[offImageID:], p.imageID)
	binary.LittleEndian.PutUint32(r[offVmpl:], 0)
	binary.LittleEndian.PutUint32(r[offSigAlgo:], abi.SignEcdsaP384Sha384)
	info := abi.SignerInfo{SigningKey: abi.VcekReportSigner, AuthorKeyEn: p.authorKeyDigest != nil}
	binary.LittleEndian.PutUint32(r[offSignerInfo:], abi.ComposeSignerInfo(info))
	copy(r[offReportData:], "cgsc verifier harness")
	copy(r[offMeasurement:], p.measurement)
	copy(r[offHostData:], p.hostData)
	copy(r[offIDKey:], p.idKeyDigest)
	copy(r[offAuthorKey:], p.authorKeyDigest)
	if version >= 3 {
		family, model, stepping := abi.FmsFromCpuid1Eax(abi.MaskedCpuid1EaxFromSevProduct(product))
		r[offCpuidFms], r[offCpuidFms+1], r[offCpuidFms+2] = family, model, stepping
	}
	return r
}

type snpMutation struct {
	name, field string
	apply       func(r []byte) bool // false: the mutation does not apply to this prediction
}

func setBit(offset, bit int) func([]byte) bool {
	return func(r []byte) bool {
		w := binary.LittleEndian.Uint64(r[offset:])
		if w>>bit&1 == 1 {
			return false // already allowed: setting it changes nothing
		}
		binary.LittleEndian.PutUint64(r[offset:], w|1<<bit)
		return true
	}
}

func flipAt(offset, size int, predicted []byte) func([]byte) bool {
	return func(r []byte) bool {
		if predicted == nil {
			return false
		}
		copy(r[offset:offset+size], flip(r[offset:offset+size]))
		return true
	}
}

func snpMutations(p snpPrediction) []snpMutation {
	return []snpMutation{
		{"measurement", "measurement", flipAt(offMeasurement, abi.MeasurementSize, p.measurement)},
		{"policy-debug", "policy", setBit(offPolicy, bitDebug)},
		{"policy-migrate-ma", "policy", setBit(offPolicy, bitMigrateMA)},
		{"policy-smt", "policy", setBit(offPolicy, bitSMT)},
		{"family-id", "family_id", flipAt(offFamilyID, abi.FamilyIDSize, p.familyID)},
		{"image-id", "image_id", flipAt(offImageID, abi.ImageIDSize, p.imageID)},
		{"host-data", "host_data", flipAt(offHostData, abi.HostDataSize, p.hostData)},
		{"id-key-digest", "id_key_digest", flipAt(offIDKey, abi.IDKeyDigestSize, p.idKeyDigest)},
		{"vmpl", "vmpl", func(r []byte) bool {
			binary.LittleEndian.PutUint32(r[offVmpl:], 1)
			return true
		}},
		{"guest-svn", "guest_svn", func(r []byte) bool {
			if p.guestSvn == 0 {
				return false // nothing is below the minimum
			}
			binary.LittleEndian.PutUint32(r[offGuestSvn:], p.guestSvn-1)
			return true
		}},
		// The library takes the policy as a maximum: a stricter report passes it by design
		// (cgsc verify refuses it).
		{"policy-stricter", "policy", func(r []byte) bool {
			w := binary.LittleEndian.Uint64(r[offPolicy:])
			if w>>bitSMT&1 == 0 {
				return false
			}
			binary.LittleEndian.PutUint64(r[offPolicy:], w&^(1<<bitSMT))
			return true
		}},
	}
}

// snpCheck runs the library's verify (with the test-only roots) and validate (with the
// config's policy) as tools/check does.
func snpCheck(evidence []byte, cfg *checkpb.Config, product *spb.SevProduct, roots string) (bool, bool, error) {
	att, err := abi.ReportCertsToProto(evidence)
	if err != nil {
		return false, false, err
	}
	sopts, err := verify.RootOfTrustToOptions(&checkpb.RootOfTrust{
		CabundlePaths: []string{roots}, ProductLine: kds.ProductLine(product), DisallowNetwork: true})
	if err != nil {
		return false, false, err
	}
	sopts.Product = product
	if err := verify.SnpAttestation(att, sopts); err != nil {
		return false, false, err
	}
	opts, err := validate.PolicyToOptions(cfg.GetPolicy())
	if err != nil {
		return true, false, err
	}
	if err := validate.SnpAttestation(att, opts); err != nil {
		return true, false, err
	}
	return true, true, nil
}

func runSnp(r map[string]any, configPath, jsonPath, out string) Result {
	var text, js checkpb.Config
	result := Result{ConfigsEqual: loadConfig(configPath, jsonPath, &text, &js)}
	p := snpFromManifest(r)
	productName := test.GetProductName()
	product, err := kds.ParseProductName(productName, abi.VcekReportSigner)
	if err != nil {
		die("%v", err)
	}
	signer, err := test.DefaultTestOnlyCertChain(productName, time.Now())
	if err != nil {
		die("test-only certificate chain: %v", err)
	}
	certs, err := signer.CertTableBytes()
	if err != nil {
		die("%v", err)
	}
	result.Roots = filepath.Join(out, "ask_ark.pem")
	write(result.Roots, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Ask.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Ark.Raw})...))
	sign := func(raw []byte) {
		R, S, err := signer.Sign(abi.SignedComponent(raw))
		if err != nil {
			die("sign: %v", err)
		}
		if err := abi.SetSignature(R, S, raw); err != nil {
			die("%v", err)
		}
	}
	add := func(name, field string, version uint32, raw []byte) {
		base := filepath.Join(out, fmt.Sprintf("snp-v%d-%s", version, name))
		evidence := append(append([]byte(nil), raw...), certs...)
		write(base+".report", raw)
		write(base+".bin", evidence)
		c := Case{Name: name, Field: field, Evidence: base + ".bin", Report: base + ".report", Version: int(version)}
		var err error
		c.Verified, c.Accepted, err = snpCheck(evidence, &text, product, result.Roots)
		if err != nil {
			c.Error = err.Error()
		}
		result.Cases = append(result.Cases, c)
	}
	for _, version := range []uint32{2, 3, 4} { // go-sev-guest 0.13 reads versions 2 to 4
		raw := p.raw(version, product)
		sign(raw)
		add("prediction", "", version, raw)
		for _, m := range snpMutations(p) {
			mutated := p.raw(version, product)
			if m.apply(mutated) {
				sign(mutated)
				add(m.name, m.field, version, mutated)
			}
		}
		// Negative control: a field changed after signing fails verify, not validate.
		tampered := append([]byte(nil), raw...)
		tampered[offMeasurement] ^= 0x01
		add("tampered-after-signing", "measurement", version, tampered)
	}
	return result
}
