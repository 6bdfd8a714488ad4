package chaos_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one process of the system under test: a binary with fixed arguments that the test
// starts, kills with SIGKILL and starts again. Its stdout and stderr go to one log file (each start
// marked in it). An exit the test did not cause (a crash, a process giving up) is recorded:
// the system must heal without anyone restarting a process.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	killing    bool     // the test is killing the current incarnation
	starts     int      // incarnations started
	logOffset  int64    // size of the log when the current incarnation started
	unexpected []string // exits the test did not cause
}

func newProc(name, bin, logPath string, args ...string) *proc {
	return &proc{name: name, bin: bin, args: args, logPath: logPath}
}

// start starts a new incarnation; the process must not be running.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("start %s: already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	defer log.Close() // the child holds its own descriptor
	info, err := log.Stat()
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.starts++
	p.logOffset = info.Size()
	fmt.Fprintf(log, "=== chaos: start %d of %s at %s\n", p.starts, p.name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.killing = cmd, done, false
	go p.wait(cmd, done)
	return nil
}

// wait reaps one incarnation and records its exit unless the test caused it.
func (p *proc) wait(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	p.mu.Lock()
	if !p.killing {
		p.unexpected = append(p.unexpected, fmt.Sprintf("%s (pid %d, start %d) exited by itself: %v", p.name, cmd.Process.Pid, p.starts, err))
	}
	p.cmd = nil
	p.mu.Unlock()
	close(done)
}

// kill sends SIGKILL to the running incarnation (by its pid) and waits until it is gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL, 0)
}

// stop ends the running incarnation gracefully (SIGTERM), or with SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM, grace)
}

func (p *proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return
	}
	p.killing = true
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			return
		case <-time.After(grace):
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	<-done
}

// running reports whether an incarnation runs.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// unexpectedExits returns the exits the test did not cause.
func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// logSinceStart returns what the current incarnation wrote to the log so far.
func (p *proc) logSinceStart() string {
	p.mu.Lock()
	off := p.logOffset
	p.mu.Unlock()
	b, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// tail returns the last n lines of the log.
func (p *proc) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// childEnv is the environment of the processes: the test's, without the variables that would
// reconfigure them behind the test's back (SAGAFLOW_* flags, OpenTelemetry exporters).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SAGAFLOW_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(ctx context.Context) (int, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls check every 100ms until it returns nil, ctx ends or limit passes; it fails the
// test with what and check's last error then.
func waitFor(ctx context.Context, t *testing.T, limit time.Duration, what string, check func(context.Context) error) {
	t.Helper()
	if err := poll(ctx, limit, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll calls check every 100ms until it returns nil (nil), or ctx ends or limit passes (check's
// last error).
func poll(ctx context.Context, limit time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %s); last: %w", ctx.Err(), limit, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errNotYet is a poll check's answer while the condition does not hold yet.
var errNotYet = errors.New("not yet")
