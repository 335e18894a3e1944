package chaos

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Duplicator re-sends received jobs: when a ReceiveMessage answer passes
// through the SQS proxy, it sends a copy of each message's body, with
// probability rate, straight to the emulator (not through the proxy) after
// a random delay up to maxDelay — so that the copy meets the original at
// any step: running, committed, or long finished. It is safe for
// concurrent use.
type Duplicator struct {
	client   *sqs.Client
	rate     float64
	maxDelay time.Duration
	enabled  atomic.Bool

	mu      sync.Mutex
	r       *rand.Rand
	stopped bool // no copy is started once Stop began

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sent, failed atomic.Int64
}

// NewDuplicator returns a duplicator sending with client (pointed at the
// emulator itself).
func NewDuplicator(client *sqs.Client, seed uint64, rate float64, maxDelay time.Duration) *Duplicator {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Duplicator{client: client, rate: rate, maxDelay: maxDelay, r: rand.New(rand.NewPCG(seed, 0xd0b1e)), ctx: ctx, cancel: cancel}
	d.enabled.Store(rate > 0)
	return d
}

// Observe looks at one SQS exchange; give it to the SQS proxy.
func (d *Duplicator) Observe(ex Exchange) {
	if !d.enabled.Load() || ex.Service != ServiceSQS || ex.Operation != "ReceiveMessage" || ex.Status != 200 {
		return
	}
	var req struct{ QueueUrl string }
	var resp struct{ Messages []struct{ Body string } }
	if json.Unmarshal(ex.Request, &req) != nil || json.Unmarshal(ex.Response, &resp) != nil || req.QueueUrl == "" {
		return
	}
	for _, m := range resp.Messages {
		d.mu.Lock()
		dup := d.r.Float64() < d.rate
		delay := time.Duration(0)
		if d.maxDelay > 0 {
			delay = time.Duration(d.r.Int64N(int64(d.maxDelay)))
		}
		if !dup || d.stopped {
			d.mu.Unlock()
			continue
		}
		// Added under d.mu, which Stop takes before it waits: an Add that
		// races a Wait on an idle WaitGroup is a data race.
		d.wg.Add(1)
		d.mu.Unlock()
		go func(body string) {
			defer d.wg.Done()
			if !sleepCtx(d.ctx, delay) {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := d.client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(req.QueueUrl), MessageBody: aws.String(body)}); err != nil {
				d.failed.Add(1)
				return
			}
			d.sent.Add(1)
		}(m.Body)
	}
}

// Stop stops duplicating: copies still waiting for their delay are
// dropped, and those being sent are waited for.
func (d *Duplicator) Stop() {
	d.enabled.Store(false)
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// Sent is the number of copies sent; Failed the number that could not be.
func (d *Duplicator) Sent() int64   { return d.sent.Load() }
func (d *Duplicator) Failed() int64 { return d.failed.Load() }
