package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WorkerPackage is the import path of the chaos worker's main package.
const WorkerPackage = "github.com/flowcraft/sqsadapter/internal/chaos/chaosworker"

// BuildWorker builds the chaos worker (without the race detector) into dir
// and returns the binary's path. It must run inside the module.
func BuildWorker(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "chaosworker")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, WorkerPackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("chaos: go build %s: %w\n%s", WorkerPackage, err, out)
	}
	return bin, nil
}

// pool runs a fixed number of worker processes, each in a slot: a slot's
// process can be killed (SIGKILL) and restarted; a process that exits
// without being signalled is a crash, recorded and restarted. Every
// process is a child of this one and is signalled only by its own PID.
type pool struct {
	bin  string
	args []string
	env  []string
	dir  string
	logf func(string, ...any)

	mu      sync.Mutex
	slots   []*slot
	closed  bool
	kills   int
	crashes []string // "w2.3: exit status 2 (log …)"
	stops   []string // how each worker ended at stop
	hangs   []string // workers that did not stop in time

	wg sync.WaitGroup // the waiters of the processes
}

type slot struct {
	idx  int
	gen  int
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	// why is set by whoever signals the process: "kill" or "stop".
	why string
	log *os.File
}

// maxCrashRestarts bounds how often crashed workers are restarted.
const maxCrashRestarts = 20

func newPool(bin string, args, env []string, dir string, n int, logf func(string, ...any)) (*pool, error) {
	p := &pool{bin: bin, args: args, env: env, dir: dir, logf: logf}
	for i := range n {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("worker-%d.log", i+1)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			p.closeLogs()
			return nil, fmt.Errorf("chaos: worker log: %w", err)
		}
		p.slots = append(p.slots, &slot{idx: i + 1, log: f})
	}
	for _, s := range p.slots {
		if err := p.start(s); err != nil {
			p.stop(time.Second)
			return nil, err
		}
	}
	return p, nil
}

// start starts a new process in slot s; the caller holds no lock.
func (p *pool) start(s *slot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	s.gen++
	id := fmt.Sprintf("w%d.%d", s.idx, s.gen)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(append([]string(nil), p.env...), "SQSADAPTER_WORKER_ID="+id)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	fmt.Fprintf(s.log, "=== chaos: starting worker %s at %s\n", id, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start worker %s: %w", id, err)
	}
	s.cmd, s.why, s.done = cmd, "", make(chan struct{})
	done := s.done
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := cmd.Wait()
		p.mu.Lock()
		why, closed := s.why, p.closed
		fmt.Fprintf(s.log, "=== chaos: worker %s (pid %d) exited: %v (%s)\n", id, cmd.Process.Pid, exitText(err), orText(why, "unprompted"))
		crashed := why == "" && !closed
		if crashed {
			p.crashes = append(p.crashes, fmt.Sprintf("%s exited on its own: %v (log %s)", id, exitText(err), s.log.Name()))
		}
		restart := crashed && len(p.crashes) <= maxCrashRestarts
		p.mu.Unlock()
		close(done)
		if crashed {
			p.logf("worker %s crashed: %v", id, exitText(err))
		}
		if restart {
			if err := p.start(s); err != nil {
				p.logf("%v", err)
			}
		}
	}()
	return nil
}

// kill SIGKILLs the process of slot i, waits for it to exit and starts a
// new one. It reports whether a process was killed.
func (p *pool) kill(i int) (bool, error) {
	p.mu.Lock()
	s := p.slots[i]
	if p.closed || s.cmd == nil || s.why != "" || isClosed(s.done) {
		p.mu.Unlock()
		return false, nil
	}
	s.why = "kill"
	cmd, done := s.cmd, s.done
	err := cmd.Process.Signal(syscall.SIGKILL)
	if err == nil {
		p.kills++
	}
	p.mu.Unlock()
	if err != nil {
		return false, nil // it exited just now; its waiter handles it
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return true, fmt.Errorf("chaos: worker w%d.%d (pid %d) did not exit within 30s of SIGKILL", s.idx, s.gen, cmd.Process.Pid)
	}
	return true, p.start(s)
}

// stop sends SIGTERM to every process and waits up to grace for each to
// exit; one that does not is killed (and recorded as a hang). No process
// is started afterwards.
func (p *pool) stop(grace time.Duration) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	type running struct {
		s    *slot
		cmd  *exec.Cmd
		done chan struct{}
	}
	var rs []running
	for _, s := range p.slots {
		if s.cmd != nil && !isClosed(s.done) {
			s.why = "stop"
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			rs = append(rs, running{s, s.cmd, s.done})
		}
	}
	p.mu.Unlock()
	deadline := time.After(grace)
	for _, r := range rs {
		select {
		case <-r.done:
		case <-deadline:
		}
		if !isClosed(r.done) {
			p.mu.Lock()
			p.hangs = append(p.hangs, fmt.Sprintf("w%d.%d did not stop within %v of SIGTERM (log %s)", r.s.idx, r.s.gen, grace, r.s.log.Name()))
			p.mu.Unlock()
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
		}
		p.mu.Lock()
		p.stops = append(p.stops, fmt.Sprintf("w%d.%d:%d", r.s.idx, r.s.gen, r.cmd.ProcessState.ExitCode()))
		p.mu.Unlock()
	}
	p.wg.Wait()
	p.closeLogs()
}

func (p *pool) closeLogs() {
	for _, s := range p.slots {
		_ = s.log.Close()
	}
}

// stats returns the kills, crashes, stop results and hangs so far.
func (p *pool) stats() (kills int, crashes, stops, hangs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kills, append([]string(nil), p.crashes...), append([]string(nil), p.stops...), append([]string(nil), p.hangs...)
}

// grep returns the last max lines of the workers' logs that contain s.
func (p *pool) grep(s string, max int) []string {
	var out []string
	for _, sl := range p.slots {
		b, err := os.ReadFile(sl.log.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) {
				out = append(out, fmt.Sprintf("w%d: %s", sl.idx, line))
			}
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
