package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// soakProc is one process of the order system that the soak started: sagaflow serve or one of
// the four services.
type soakProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// exited is closed when the process has exited; err is then its exit error.
	exited chan struct{}
	err    error
	// stopping is set once the soak asked it to stop, so that its exit is no death.
	stopping atomic.Bool
}

// startProc starts bin with args, its output going to <dir>/<name>.log, and reports its exit on
// deaths (unless the soak stopped it).
// When ctx ends (the soak is interrupted) the process gets SIGTERM, and SIGKILL 45s later.
func startProc(ctx context.Context, name, dir, bin string, args []string, deaths chan<- *soakProc) (*soakProc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 45 * time.Second
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &soakProc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.exited)
		if !p.stopping.Load() {
			deaths <- p
		}
	}()
	return p, nil
}

// pid is the process id.
func (p *soakProc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to stop (SIGTERM), waits up to grace, then kills it; it returns the exit
// error of a process that did not stop cleanly.
func (p *soakProc) stop(grace time.Duration) error {
	p.stopping.Store(true)
	select {
	case <-p.exited:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.exitErr()
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s (pid %d) did not stop within %s of SIGTERM: killed", p.name, p.pid(), grace)
	}
}

func (p *soakProc) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s (pid %d) exited: %w", p.name, p.pid(), p.err)
	}
	return nil
}

// exitStatus says how the process exited, once it has.
func (p *soakProc) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

// logTail is the end of the process's log, for a report of its death.
func (p *soakProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(bytes.TrimSpace(b))
}

// freeAddr returns a free 127.0.0.1 address for a child process to listen on.
func freeAddr(ctx context.Context) (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitReady polls url until it answers 200, p exits, or timeout passes.
func waitReady(ctx context.Context, p *soakProc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after %s; its log %s ends:\n%s", p.name, url, timeout, p.logPath, p.logTail())
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting (%s); its log %s ends:\n%s", p.name, p.exitStatus(), p.logPath, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// buildServiceBin builds examples/order/cmd/order-service into dir with "go build", which works
// when the soak runs inside the Sagaflow repository (a checkout of the module).
func buildServiceBin(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "order-service")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/sagaflow/sagaflow/examples/order/cmd/order-service")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("--service-bin not given, and building the order example's service here failed "+
			"(run the soak inside the Sagaflow repository, or build it with "+
			"\"go build -o order-service ./examples/order/cmd/order-service\" and pass --service-bin): %w: %s",
			err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// errProcessDied reports that a process of the order system died during the soak.
var errProcessDied = errors.New("a process of the order system died")
