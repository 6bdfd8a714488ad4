package benchmeter

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on every Linux
// architecture (sysconf(_SC_CLK_TCK) reports it; reading it needs cgo).
const clockTick = 10 * time.Millisecond

// BackendCPU returns the CPU time (user + system) that PostgreSQL backend pid has used so far,
// from /proc/<pid>/stat. It makes sure the process is a PostgreSQL backend of database first (its
// command name is "postgres" and, when PostgreSQL shows a process title, the title names the
// database), and returns an error wrapping ErrNotBackend when it is not, or the read error when
// /proc cannot be read.
func BackendCPU(pid int, database string) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read backend %d: %w", pid, err)
	}
	comm, cpu, err := parseStat(stat)
	if err != nil {
		return 0, fmt.Errorf("read backend %d: %w", pid, err)
	}
	if comm != "postgres" {
		return 0, fmt.Errorf("backend %d: process here is %q: %w", pid, comm, ErrNotBackend)
	}
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return 0, fmt.Errorf("read backend %d: %w", pid, err)
	}
	// With update_process_title on (the default), a backend's title is
	// "postgres: [cluster: ]user database host(port) state".
	title := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	if strings.HasPrefix(title, "postgres:") && !strings.Contains(title, " "+database+" ") {
		return 0, fmt.Errorf("backend %d: process here is %q: %w", pid, strings.TrimSpace(title), ErrNotBackend)
	}
	return cpu, nil
}

// parseStat returns the command name and utime + stime of a /proc/<pid>/stat line.
func parseStat(b []byte) (comm string, cpu time.Duration, err error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("malformed stat %q", b)
	}
	// After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
	// cmajflt utime stime ... (proc(5): fields 3, 4, …, 14, 15).
	fields := strings.Fields(string(b[end+1:]))
	if len(fields) < 13 {
		return "", 0, fmt.Errorf("malformed stat %q", b)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return "", 0, fmt.Errorf("malformed stat %q: %w", b, err)
		}
		ticks += n
	}
	return string(b[open+1 : end]), time.Duration(ticks) * clockTick, nil
}
