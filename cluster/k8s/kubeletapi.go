// kubelet-api: the part of the kubelet's HTTPS API that `kubectl logs` and `kubectl port-forward` reach
// through the apiserver, for the local node agent (dev/sglang_dev/cluster), which runs pods as local
// processes and writes a table of them (--pods-file, JSON):
//
//	{"<namespace>/<pod>": {"uid": "...", "ip": "127.p.a.b",
//	                       "containers": {"<name>": {"log": "/path/engine.log", "previous": "/path/engine.previous.log"}}}}
//
// Served (the kubelet's paths and query parameters):
//
//	GET /containerLogs/{namespace}/{pod}/{container}  follow, previous, tailLines, limitBytes
//	*   /portForward/{namespace}/{pod}[/{uid}]         SPDY (portforward.k8s.io), with the kubelet's own
//	                                                   server code (k8s.io/cri-streaming); the apiserver
//	                                                   translates kubectl's websocket tunnel into it
//	GET /healthz
//
// Authentication: TLS client certificates signed by --client-ca-file (the apiserver's kubelet client cert);
// --authorized-user limits which certificate subjects (CN) may call (repeatable; none given: any signed).
// Not served (404 naming it): exec, attach, run, stats, metrics, checkpoint, pods, configz.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
)

func init() {
	register("kubelet-api", kubeletAPIMain)
}

type kubeletContainer struct {
	Log      string `json:"log"`
	Previous string `json:"previous"`
}

type kubeletPod struct {
	UID        string                      `json:"uid"`
	IP         string                      `json:"ip"`
	Containers map[string]kubeletContainer `json:"containers"`
}

type kubeletAPI struct {
	podsFile   string
	authorized []string
}

// kubeletAPIMain runs the server; args[0] is the subcommand's name (as main.go passes it), flags follow.
func kubeletAPIMain(args []string) int {
	fs := flag.NewFlagSet("kubelet-api", flag.ContinueOnError)
	address := fs.String("address", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 0, "port to listen on (0: a free one, written to --port-file)")
	portFile := fs.String("port-file", "", "write the bound port here once listening")
	certFile := fs.String("tls-cert-file", "", "serving certificate (PEM)")
	keyFile := fs.String("tls-private-key-file", "", "serving key (PEM)")
	clientCA := fs.String("client-ca-file", "", "CA that signs the callers' client certificates (PEM)")
	podsFile := fs.String("pods-file", "", "the node agent's pod table (JSON)")
	var authorized stringList // certs.go
	fs.Var(&authorized, "authorized-user", "client certificate CN allowed to call (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	for name, value := range map[string]string{"--tls-cert-file": *certFile, "--tls-private-key-file": *keyFile,
		"--client-ca-file": *clientCA, "--pods-file": *podsFile} {
		if value == "" {
			fmt.Fprintf(os.Stderr, "kubelet-api: %s is required\n", name)
			return 2
		}
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-api: --client-ca-file: %v\n", err)
		return 1
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fmt.Fprintf(os.Stderr, "kubelet-api: --client-ca-file %s holds no PEM certificate\n", *clientCA)
		return 1
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-api: serving certificate: %v\n", err)
		return 1
	}
	api := &kubeletAPI{podsFile: *podsFile, authorized: authorized}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", api.containerLogs)
	mux.HandleFunc("/portForward/{namespace}/{pod}", api.portForward)
	mux.HandleFunc("/portForward/{namespace}/{pod}/{uid}", api.portForward)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("%s is not served by the local node agent (only containerLogs and portForward)",
			r.URL.Path), http.StatusNotFound)
	})
	listener, err := net.Listen("tcp", net.JoinHostPort(*address, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-api: listen: %v\n", err)
		return 1
	}
	bound := listener.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		err := os.WriteFile(tmp, []byte(strconv.Itoa(bound)), 0o644)
		if err == nil {
			err = os.Rename(tmp, *portFile)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubelet-api: --port-file: %v\n", err)
			return 1
		}
	}
	server := &http.Server{
		Handler:           api.authenticated(mux),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	}
	fmt.Fprintf(os.Stderr, "kubelet-api: serving https://%s:%d (pods from %s)\n", *address, bound, *podsFile)
	if err := server.ServeTLS(listener, "", ""); err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-api: %v\n", err)
		return 1
	}
	return 0
}

// authenticated refuses callers whose (verified) certificate is not on the --authorized-user list.
func (a *kubeletAPI) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "Unauthorized: a client certificate signed by the cluster CA is required",
				http.StatusUnauthorized)
			return
		}
		cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
		if len(a.authorized) > 0 && !slices.Contains(a.authorized, cn) {
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, path=%s)", cn, r.Method, r.URL.Path),
				http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *kubeletAPI) pod(namespace, name string) (kubeletPod, bool) {
	raw, err := os.ReadFile(a.podsFile)
	if err != nil {
		return kubeletPod{}, false
	}
	var table map[string]kubeletPod
	if json.Unmarshal(raw, &table) != nil {
		return kubeletPod{}, false
	}
	pod, ok := table[namespace+"/"+name]
	return pod, ok
}

func (a *kubeletAPI) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	pod, ok := a.pod(ns, name)
	if !ok {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on this node", ns, name), http.StatusNotFound)
		return
	}
	files, ok := pod.Containers[container]
	if !ok {
		http.Error(w, fmt.Sprintf("container %q is not valid for pod %q", container, name), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	previous, follow := q.Get("previous") == "true", q.Get("follow") == "true"
	path := files.Log
	if previous {
		path, follow = files.Previous, false
	}
	f, err := os.Open(path)
	if err != nil {
		if previous {
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", container, name),
				http.StatusBadRequest)
		} else {
			http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start", container, name),
				http.StatusBadRequest)
		}
		return
	}
	defer f.Close()
	start, err := tailOffset(f, q.Get("tailLines"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit := int64(-1)
	if v := q.Get("limitBytes"); v != "" {
		if limit, err = strconv.ParseInt(v, 10, 64); err != nil || limit <= 0 {
			http.Error(w, "limitBytes must be a positive integer", http.StatusBadRequest)
			return
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	copyLimited := func() bool { // false once limitBytes is reached
		var src io.Reader = f
		if limit >= 0 {
			src = io.LimitReader(f, limit)
		}
		n, _ := io.Copy(w, src)
		if limit >= 0 {
			limit -= n
		}
		if flusher != nil {
			flusher.Flush()
		}
		return limit != 0
	}
	if !copyLimited() || !follow {
		return
	}
	// Follow until the caller goes, the container restarts (its log moves to .previous) or the pod leaves.
	for {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if !copyLimited() {
			return
		}
		if now, ok := a.pod(ns, name); !ok || now.UID != pod.UID || !sameFile(f, path) {
			copyLimited()
			return
		}
	}
}

func sameFile(f *os.File, path string) bool {
	open, err1 := f.Stat()
	named, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(open, named)
}

// tailOffset is where the last n lines of f start ("" or negative: the whole file).
func tailOffset(f *os.File, tail string) (int64, error) {
	if tail == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(tail)
	if err != nil {
		return 0, fmt.Errorf("tailLines must be an integer")
	}
	if n < 0 {
		return 0, nil
	}
	var starts []int64
	var offset int64
	reader := bufio.NewReader(f)
	for {
		line, err := reader.ReadBytes('\n')
		if len(line) > 0 {
			starts = append(starts, offset)
			offset += int64(len(line))
		}
		if err != nil {
			break
		}
	}
	if n >= len(starts) {
		return 0, nil
	}
	if n == 0 {
		return offset, nil
	}
	return starts[len(starts)-n], nil
}

// podForwarder connects each forwarded stream to the pod's loopback address.
type podForwarder struct{ ip string }

func (p podForwarder) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	dialer := net.Dialer{Timeout: 5 * time.Second}
	conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(p.ip, strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port %d of the pod (%s): %w", port, p.ip, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	<-done
	<-done
	return nil
}

func (a *kubeletAPI) portForward(w http.ResponseWriter, r *http.Request) {
	ns, name, uid := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("uid")
	pod, ok := a.pod(ns, name)
	if !ok || (uid != "" && uid != pod.UID) {
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, podForwarder{ip: pod.IP}, name, pod.UID, opts,
		4*time.Hour, 30*time.Second, portforward.SupportedProtocols)
}
