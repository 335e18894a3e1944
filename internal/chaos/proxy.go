package chaos

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault kinds the proxy injects.
const (
	FaultHTTP500  = "http500"  // an HTTP 500 with the service's internal error body
	FaultThrottle = "throttle" // a throttling error (ThrottlingException, ProvisionedThroughputExceededException)
	FaultReset    = "reset"    // the connection reset (TCP RST) without a response
	FaultLatency  = "latency"  // a delay, then the real response
)

// FaultKinds lists the fault kinds, in the order the summary prints them.
var FaultKinds = []string{FaultHTTP500, FaultThrottle, FaultReset, FaultLatency}

// Services the proxy fronts.
const (
	ServiceSQS      = "sqs"
	ServiceDynamoDB = "dynamodb"
)

// Injector decides which proxied requests fail and how, and counts what it
// did. A fault happens before the request is forwarded (the emulator never
// sees it) or after (the emulator applied it, but the client sees an error,
// a reset, or a late answer). It is safe for concurrent use.
type Injector struct {
	rate       float64
	maxLatency time.Duration
	enabled    atomic.Bool

	mu sync.Mutex
	r  *rand.Rand
	// force, when set, is the fault of every request (a test seam).
	force *fault

	requests       atomic.Int64
	byService      sync.Map // service → *atomic.Int64 (requests)
	faults         [4]atomic.Int64
	before, after  atomic.Int64
	upstreamErrors atomic.Int64
}

// NewInjector returns an injector that faults a share rate of the requests,
// with kinds drawn uniformly and delays up to maxLatency, from seed.
func NewInjector(seed uint64, rate float64, maxLatency time.Duration) *Injector {
	in := &Injector{rate: rate, maxLatency: maxLatency, r: rand.New(rand.NewPCG(seed, 0xfa017))}
	in.enabled.Store(rate > 0)
	return in
}

// SetEnabled turns fault injection on or off.
func (in *Injector) SetEnabled(on bool) { in.enabled.Store(on && in.rate > 0) }

// fault is one decision.
type fault struct {
	kind    string // "" for none
	after   bool
	latency time.Duration
	variant int // which error body, for throttles
}

func (in *Injector) decide(service string) fault {
	in.requests.Add(1)
	c, _ := in.byService.LoadOrStore(service, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	if !in.enabled.Load() {
		return fault{}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var f fault
	if in.force != nil {
		f = *in.force
	} else {
		if in.r.Float64() >= in.rate {
			return fault{}
		}
		f = fault{kind: FaultKinds[in.r.IntN(len(FaultKinds))], after: in.r.IntN(2) == 0, variant: in.r.IntN(2)}
		if f.kind == FaultLatency {
			f.latency = time.Duration(in.r.Int64N(int64(in.maxLatency)/2)) + in.maxLatency/2
		}
	}
	in.faults[slices.Index(FaultKinds, f.kind)].Add(1)
	if f.after {
		in.after.Add(1)
	} else {
		in.before.Add(1)
	}
	return f
}

// FaultCounts is a snapshot of an Injector's counters.
type FaultCounts struct {
	Requests       int64
	ByService      map[string]int64
	ByKind         map[string]int64
	Before, After  int64
	UpstreamErrors int64 // requests the emulator did not answer (the proxy answered 502)
}

// Faulted is the number of faulted requests.
func (c FaultCounts) Faulted() int64 { return c.Before + c.After }

// Counts returns the counters so far.
func (in *Injector) Counts() FaultCounts {
	c := FaultCounts{
		Requests: in.requests.Load(), ByService: map[string]int64{}, ByKind: map[string]int64{},
		Before: in.before.Load(), After: in.after.Load(), UpstreamErrors: in.upstreamErrors.Load(),
	}
	in.byService.Range(func(k, v any) bool {
		c.ByService[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	for i, k := range FaultKinds {
		c.ByKind[k] = in.faults[i].Load()
	}
	return c
}

// Exchange is one request the proxy forwarded and the emulator's answer.
type Exchange struct {
	Service   string
	Operation string // from X-Amz-Target, e.g. "UpdateItem", "ReceiveMessage"
	Request   []byte
	Status    int
	Response  []byte
	// Hidden is true when the client did not get this answer: a fault
	// after forwarding replaced it (a reset or an error; latency delays it
	// only).
	Hidden bool
}

// Proxy is a fault-injecting HTTP proxy on loopback in front of one AWS JSON
// protocol emulator (the operation is named by the X-Amz-Target header).
// Observe, if set, sees every request the emulator answered.
type Proxy struct {
	service  string
	upstream *url.URL
	inj      *Injector
	observe  func(Exchange)

	ln     net.Listener
	srv    *http.Server
	client *http.Client
	base   context.Context
	cancel context.CancelFunc
	served chan struct{}
	ids    atomic.Int64 // request ids of injected errors
}

// upstreamTimeout bounds a forwarded request other than a long poll.
const upstreamTimeout = 30 * time.Second

// NewProxy starts a proxy on 127.0.0.1 (a free port) that forwards to
// upstream, an http://127.0.0.1 URL. Close stops it.
func NewProxy(service, upstream string, inj *Injector, observe func(Exchange)) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy upstream %q: %w", upstream, err)
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme != "http" || ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("chaos: proxy upstream %q is not an http loopback address", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy listen: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		service: service, upstream: u, inj: inj, observe: observe, ln: ln,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		}},
		base: base, cancel: cancel, served: make(chan struct{}),
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          nil,
	}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(ln) // returns when Close closes the listener
	}()
	return p, nil
}

// URL is the proxy's address, for AWS_ENDPOINT_URL_*.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy: it cancels forwarded requests and closes every
// connection.
func (p *Proxy) Close() error {
	p.cancel()
	err := p.srv.Close()
	<-p.served
	p.client.CloseIdleConnections()
	return err
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		return // the client went away
	}
	target := r.Header.Get("X-Amz-Target")
	op := target[strings.LastIndexByte(target, '.')+1:]
	f := p.inj.decide(p.service)

	if f.kind != "" && !f.after {
		switch f.kind {
		case FaultLatency:
			if !sleepCtx(r.Context(), f.latency) {
				return
			}
		case FaultReset:
			reset(w)
			return
		default:
			p.writeFault(w, f)
			return
		}
	}

	// Only a long poll follows its client: other requests are seen through
	// to the emulator's answer, so that the proxy knows what was applied
	// even when the client died meanwhile.
	ctx := r.Context()
	if op != "ReceiveMessage" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), upstreamTimeout)
		defer cancel()
		stop := context.AfterFunc(p.base, cancel)
		defer stop()
	}
	status, header, respBody, err := p.forward(ctx, r, body)
	if err != nil {
		if r.Context().Err() == nil {
			p.inj.upstreamErrors.Add(1)
			http.Error(w, "chaos proxy: upstream: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	hidden := f.kind != "" && f.after && f.kind != FaultLatency
	if p.observe != nil {
		p.observe(Exchange{Service: p.service, Operation: op, Request: body, Status: status, Response: respBody, Hidden: hidden})
	}
	if f.kind != "" && f.after {
		switch f.kind {
		case FaultLatency:
			if !sleepCtx(r.Context(), f.latency) {
				return
			}
		case FaultReset:
			reset(w)
			return
		default:
			p.writeFault(w, f)
			return
		}
	}
	for k, vs := range header {
		if hopByHop[http.CanonicalHeaderKey(k)] || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(respBody)))
	w.WriteHeader(status)
	_, _ = w.Write(respBody)
}

var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Proxy-Connection": true,
}

// forward sends the request to the emulator and reads its whole answer.
func (p *Proxy) forward(ctx context.Context, r *http.Request, body []byte) (int, http.Header, []byte, error) {
	u := *p.upstream
	u.Path = r.URL.Path
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, vs := range r.Header {
		if hopByHop[k] {
			continue
		}
		req.Header[k] = vs
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// writeFault answers with an injected error, in the shape the service's
// AWS JSON protocol uses, so that the SDK classifies it as the real one
// (retryable: a 500, or a throttling error by its code).
func (p *Proxy) writeFault(w http.ResponseWriter, f fault) {
	status, code, query := http.StatusInternalServerError, "", ""
	switch p.service {
	case ServiceDynamoDB:
		code = "com.amazonaws.dynamodb.v20120810#InternalServerError"
		if f.kind == FaultThrottle {
			status = http.StatusBadRequest
			code = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
			if f.variant == 1 {
				code = "com.amazon.coral.availability#ThrottlingException"
			}
		}
	default: // SQS, JSON protocol in query-compatible mode
		code, query = "com.amazonaws.sqs#InternalError", "InternalError;Receiver"
		if f.kind == FaultThrottle {
			status = http.StatusBadRequest
			code, query = "com.amazonaws.sqs#ThrottlingException", "ThrottlingException;Sender"
			if f.variant == 1 {
				code, query = "com.amazonaws.sqs#RequestThrottled", "RequestThrottled;Sender"
			}
		}
	}
	body := []byte(fmt.Sprintf(`{"__type":%q,"message":"chaos: injected %s"}`, code, f.kind))
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.0")
	h.Set("X-Amzn-Requestid", fmt.Sprintf("chaos-%s-%d", p.service, p.ids.Add(1)))
	h.Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
	if query != "" {
		h.Set("X-Amzn-Query-Error", query)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// reset closes the client's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
