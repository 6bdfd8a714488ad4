package benchmeter

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proc is what /proc shows of a running process at one moment.
type Proc struct {
	// CPU is the user + system time the process has used so far.
	CPU time.Duration
	// RSS is its resident memory in bytes (VmRSS).
	RSS int64
	// OpenFiles is the number of its open file descriptors (entries of /proc/<pid>/fd).
	OpenFiles int
}

// ReadProc reads process pid's CPU time, resident memory and open file descriptors from /proc
// (Linux only; an error elsewhere or when the process is gone).
func ReadProc(pid int) (Proc, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	var p Proc
	if _, p.CPU, err = parseStat(stat); err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	if p.RSS, err = parseRSS(status); err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	p.OpenFiles = len(fds)
	return p, nil
}

// parseRSS returns the VmRSS line of a /proc/<pid>/status file in bytes.
func parseRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmRSS line %q: %w", sc.Text(), err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line in status")
}
