// Command freeport prints a TCP port on 127.0.0.1 that was free a moment ago.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
)

func main() {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
}
