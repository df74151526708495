package main

// certs: the project's PKI for the local control plane, made with Go's crypto/x509 and client-go's
// cert/keyutil helpers (no hand-written crypto, and no Python crypto dependency).
//
//	k8s certs ca    --cert ca.crt --key ca.key [--cn NAME] [--days N]
//	k8s certs issue --ca-cert ca.crt --ca-key ca.key --cert X.crt --key X.key --cn CN
//	                [--org O]... [--dns NAME]... [--ip ADDR]... [--usage server|client|both] [--days N]
//	k8s certs key   --key sa.key     (an ECDSA P-256 private key, e.g. the ServiceAccount signing key)

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

func init() { register("certs", runCerts) }

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runCerts(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s certs ca|issue|key [flags]")
		return 2
	}
	var err error
	switch args[1] {
	case "ca":
		err = certsCA(args[2:])
	case "issue":
		err = certsIssue(args[2:])
	case "key":
		err = certsKey(args[2:])
	default:
		err = fmt.Errorf("unknown certs action %q (want ca, issue or key)", args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s certs:", err)
		return 1
	}
	return 0
}

// newKey makes an ECDSA P-256 key and writes it (mode 0600) to path.
func newKey(path string) (crypto.Signer, error) {
	keyPEM, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	if err := keyutil.WriteKey(path, keyPEM); err != nil {
		return nil, err
	}
	key, err := keyutil.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	return key.(crypto.Signer), nil
}

// writeCert writes one certificate as PEM.
func writeCert(path string, certificate *x509.Certificate) error {
	data, err := cert.EncodeCertificates(certificate)
	if err != nil {
		return err
	}
	return cert.WriteCert(path, data)
}

func requireFlags(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if fs.Lookup(name).Value.String() == "" {
			return fmt.Errorf("%s: --%s is required", fs.Name(), name)
		}
	}
	return nil
}

func certsCA(args []string) error {
	fs := flag.NewFlagSet("ca", flag.ContinueOnError)
	certPath := fs.String("cert", "", "CA certificate output (PEM)")
	keyPath := fs.String("key", "", "CA private key output (PEM)")
	cn := fs.String("cn", "sglang-operator-local-ca", "CA common name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireFlags(fs, "cert", "key"); err != nil {
		return err
	}
	key, err := newKey(*keyPath)
	if err != nil {
		return err
	}
	ca, err := cert.NewSelfSignedCACert(cert.Config{CommonName: *cn}, key)
	if err != nil {
		return err
	}
	return writeCert(*certPath, ca)
}

func certsIssue(args []string) error {
	fs := flag.NewFlagSet("issue", flag.ContinueOnError)
	caCertPath := fs.String("ca-cert", "", "signing CA certificate (PEM)")
	caKeyPath := fs.String("ca-key", "", "signing CA private key (PEM)")
	certPath := fs.String("cert", "", "certificate output (PEM)")
	keyPath := fs.String("key", "", "private key output (PEM)")
	cn := fs.String("cn", "", "subject common name (the user name for client certificates)")
	usage := fs.String("usage", "both", "server, client or both")
	days := fs.Int("days", 365, "validity in days")
	var orgs, dnsNames, ips stringList
	fs.Var(&orgs, "org", "subject organization (a group for client certificates); repeatable")
	fs.Var(&dnsNames, "dns", "DNS subject alternative name; repeatable")
	fs.Var(&ips, "ip", "IP subject alternative name; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireFlags(fs, "ca-cert", "ca-key", "cert", "key", "cn"); err != nil {
		return err
	}
	var extUsage []x509.ExtKeyUsage
	switch *usage {
	case "server":
		extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case "client":
		extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case "both":
		extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	default:
		return fmt.Errorf("issue: --usage must be server, client or both, not %q", *usage)
	}
	if *days < 1 {
		return fmt.Errorf("issue: --days must be at least 1, not %d", *days)
	}
	var ipAddrs []net.IP
	for _, raw := range ips {
		ip := net.ParseIP(raw)
		if ip == nil {
			return fmt.Errorf("issue: --ip %q is not an IP address", raw)
		}
		ipAddrs = append(ipAddrs, ip)
	}
	caCerts, err := cert.CertsFromFile(*caCertPath)
	if err != nil {
		return err
	}
	caKeyAny, err := keyutil.PrivateKeyFromFile(*caKeyPath)
	if err != nil {
		return err
	}
	caKey, ok := caKeyAny.(crypto.Signer)
	if !ok {
		return errors.New("issue: the CA key cannot sign")
	}
	key, err := newKey(*keyPath)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: *cn, Organization: orgs},
		DNSNames:     dnsNames,
		IPAddresses:  ipAddrs,
		NotBefore:    now.Add(-time.Minute), // tolerate small clock differences between processes
		NotAfter:     now.Add(time.Duration(*days) * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  extUsage,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCerts[0], key.Public(), caKey)
	if err != nil {
		return err
	}
	issued, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	return writeCert(*certPath, issued)
}

func certsKey(args []string) error {
	fs := flag.NewFlagSet("key", flag.ContinueOnError)
	keyPath := fs.String("key", "", "private key output (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireFlags(fs, "key"); err != nil {
		return err
	}
	_, err := newKey(*keyPath)
	return err
}
