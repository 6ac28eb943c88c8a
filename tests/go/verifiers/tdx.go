package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	ccpb "github.com/google/go-tdx-guest/proto/checkconfig"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
	"google.golang.org/protobuf/proto"
)

// TD attribute and XFAM bits (Intel TDX Module ABI; go-tdx-guest validate/validate.go).
const (
	attrDebug         = 0
	attrSeptVeDisable = 28
	xfamPkru          = 9 // allowed by the library's fixed bits either way
)

type tdxPrediction struct {
	attributes, xfam                         uint64
	mrTd, mrConfigID, mrOwner, mrOwnerConfig []byte
}

func tdxFromManifest(r map[string]any, xfamFlag string) tdxPrediction {
	p := tdxPrediction{
		mrTd:          hexField(r, "mrtd", abi.MrTdSize),
		mrConfigID:    hexField(r, "mrconfigid", abi.MrConfigIDSize),
		mrOwner:       hexField(r, "mrowner", abi.MrOwnerSize),
		mrOwnerConfig: hexField(r, "mrownerconfig", abi.MrOwnerConfigSize),
	}
	var ok bool
	if p.attributes, ok = wordField(r, "attributes"); !ok || p.mrTd == nil {
		die("manifest report lacks attributes or mrtd")
	}
	if xfamFlag != "" {
		x, err := strconv.ParseUint(xfamFlag, 0, 64)
		if err != nil {
			die("-xfam %q: %v", xfamFlag, err)
		}
		p.xfam = x
	} else if p.xfam, ok = wordField(r, "xfam"); !ok {
		die("manifest report has no exact xfam: give -xfam")
	}
	return p
}

func le64(w uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, w)
	return b
}

// chain is a throw-away PCK certificate chain shaped like Intel's (the names and key types
// go-tdx-guest's verify checks), for test quotes only.
type chain struct {
	root, intermediate, pck *x509.Certificate
	pckKey                  *ecdsa.PrivateKey
	pem                     []byte
}

func certify(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, serial int64,
	ca bool, exts []pkix.Extension) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		die("%v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cgsc test only"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
		IsCA:                  ca,
		BasicConstraintsValid: true,
		ExtraExtensions:       exts,
	}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		// A PCK certificate has six extensions (pcs.PckCertificateExtensions counts them):
		// key usage, basic constraints, the key identifiers, the CRL point and SGX's own.
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.SubjectKeyId = []byte{byte(serial)}
		tmpl.CRLDistributionPoints = []string{"https://cgsc.invalid/test-only-pck-crl"}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		die("certificate %s: %v", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		die("%v", err)
	}
	return cert, key
}

func newChain(sample *pb.QuoteV4) chain {
	// The PCK certificate's SGX extension (FMSPC, PCE ID, TCB) comes from the library's
	// sample quote: verify parses it.
	block, _ := pem.Decode(sample.GetSignedData().GetCertificationData().GetQeReportCertificationData().
		GetPckCertificateChainData().GetPckCertChain())
	if block == nil {
		die("the sample quote has no PCK certificate")
	}
	original, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		die("%v", err)
	}
	var sgx []pkix.Extension
	for _, e := range original.Extensions {
		if e.Id.Equal(pcs.OidSgxExtension) {
			sgx = append(sgx, e)
		}
	}
	root, rootKey := certify("Intel SGX Root CA", nil, nil, 1, true, nil)
	intermediate, intKey := certify("Intel SGX PCK Platform CA", root, rootKey, 2, true, nil)
	pck, pckKey := certify("Intel SGX PCK Certificate", intermediate, intKey, 3, false, sgx)
	var all []byte
	for _, c := range []*x509.Certificate{pck, intermediate, root} {
		all = append(all, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return chain{root, intermediate, pck, pckKey, all}
}

// rawSignature is an ECDSA P-256 signature over sha256(data) as the quote holds it: r || s.
func rawSignature(key *ecdsa.PrivateKey, data []byte) []byte {
	digest := sha256.Sum256(data)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		die("%v", err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// quote is the sample quote with the prediction (changed by mutate) in its body, signed by
// a fresh attestation key certified through the throw-away chain.
func quote(sample *pb.QuoteV4, c chain, p tdxPrediction, mutate func(*pb.TDQuoteBody)) []byte {
	q := proto.Clone(sample).(*pb.QuoteV4)
	q.ExtraBytes = nil
	body := q.GetTdQuoteBody()
	body.TdAttributes = le64(p.attributes)
	body.Xfam = le64(p.xfam)
	body.MrTd, body.MrConfigId = p.mrTd, p.mrConfigID
	body.MrOwner, body.MrOwnerConfig = p.mrOwner, p.mrOwnerConfig
	body.ReportData = make([]byte, abi.ReportDataSize)
	copy(body.ReportData, "cgsc verifier harness")
	if mutate != nil {
		mutate(body)
	}
	attKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		die("%v", err)
	}
	pub := make([]byte, 64)
	attKey.PublicKey.X.FillBytes(pub[:32])
	attKey.PublicKey.Y.FillBytes(pub[32:])
	signed := q.GetSignedData()
	signed.EcdsaAttestationKey = pub
	cert := signed.GetCertificationData()
	qe := cert.GetQeReportCertificationData()
	qe.PckCertificateChainData.PckCertChain = c.pem
	qe.PckCertificateChainData.Size = uint32(len(c.pem))
	// QE report data: sha256(attestation key || QE authentication data), zero-padded.
	digest := sha256.Sum256(append(append([]byte(nil), pub...), qe.GetQeAuthData().GetData()...))
	qe.QeReport.ReportData = append(digest[:], make([]byte, 32)...)
	qeRaw, err := abi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		die("%v", err)
	}
	qe.QeReportSignature = rawSignature(c.pckKey, qeRaw)
	// Sizes: QE report, its signature, the auth data and the PCK chain with their headers.
	cert.Size = uint32(len(qeRaw) + 64 + 2 + len(qe.GetQeAuthData().GetData()) + 2 + 4 + len(c.pem))
	q.SignedDataSize = 64 + 64 + 2 + 4 + cert.Size
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		die("%v", err)
	}
	bodyRaw, err := abi.TdQuoteBodyToAbiBytes(body)
	if err != nil {
		die("%v", err)
	}
	signed.Signature = rawSignature(attKey, append(header, bodyRaw...))
	raw, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		die("%v", err)
	}
	return raw
}

func tdxCheck(raw []byte, cfg *ccpb.Config, roots *x509.CertPool) (bool, bool, error) {
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return false, false, err
	}
	if err := verify.TdxQuote(q, &verify.Options{TrustedRoots: roots, Now: time.Now()}); err != nil {
		return false, false, err
	}
	opts, err := validate.PolicyToOptions(cfg.GetPolicy())
	if err != nil {
		return true, false, err
	}
	if err := validate.TdxQuote(q, opts); err != nil {
		return true, false, err
	}
	return true, true, nil
}

func runTdx(r map[string]any, configPath, jsonPath, xfam, out string) Result {
	var text, js ccpb.Config
	result := Result{ConfigsEqual: loadConfig(configPath, jsonPath, &text, &js)}
	p := tdxFromManifest(r, xfam)
	parsed, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		die("the library's sample quote: %v", err)
	}
	sample := parsed.(*pb.QuoteV4)
	c := newChain(sample)
	result.Roots = filepath.Join(out, "tdx_root.pem")
	write(result.Roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw}))
	roots := x509.NewCertPool()
	roots.AddCert(c.root)
	toggle := func(bit uint) func(*pb.TDQuoteBody) {
		return func(b *pb.TDQuoteBody) {
			b.TdAttributes = le64(binary.LittleEndian.Uint64(b.TdAttributes) ^ 1<<bit)
		}
	}
	mutations := []struct {
		name, field string
		mutate      func(*pb.TDQuoteBody)
	}{
		{"prediction", "", nil},
		{"mr-td", "mrtd", func(b *pb.TDQuoteBody) { b.MrTd = flip(b.MrTd) }},
		{"td-attributes-debug", "attributes", toggle(attrDebug)},
		{"td-attributes-sept-ve-disable", "attributes", toggle(attrSeptVeDisable)},
		{"xfam", "xfam", func(b *pb.TDQuoteBody) {
			b.Xfam = le64(binary.LittleEndian.Uint64(b.Xfam) ^ 1<<xfamPkru)
		}},
		{"mr-config-id", "mrconfigid", func(b *pb.TDQuoteBody) { b.MrConfigId = flip(b.MrConfigId) }},
		{"mr-owner", "mrowner", func(b *pb.TDQuoteBody) { b.MrOwner = flip(b.MrOwner) }},
		{"mr-owner-config", "mrownerconfig", func(b *pb.TDQuoteBody) { b.MrOwnerConfig = flip(b.MrOwnerConfig) }},
	}
	add := func(name, field string, raw []byte) {
		path := filepath.Join(out, "tdx-v4-"+name+".quote")
		write(path, raw)
		cs := Case{Name: name, Field: field, Evidence: path, Report: path, Version: 4}
		var err error
		cs.Verified, cs.Accepted, err = tdxCheck(raw, &text, roots)
		if err != nil {
			cs.Error = err.Error()
		}
		result.Cases = append(result.Cases, cs)
	}
	var prediction []byte
	for _, m := range mutations {
		raw := quote(sample, c, p, m.mutate)
		if m.mutate == nil {
			prediction = raw
		}
		add(m.name, m.field, raw)
	}
	// Negative control: a body byte changed after signing fails verify, not validate.
	tampered := append([]byte(nil), prediction...)
	tampered[0x30+136] ^= 0x01 // MRTD: header (48) + its offset in the TD quote body
	add("tampered-after-signing", "mrtd", tampered)
	return result
}
