// Go mhale/smtpd sink for the benchmark: accept every message and discard it.
// Built by bench/peers.py into bench/.cache when a Go toolchain is present.
// Usage: gosink HOST:PORT
package main

import (
	"log"
	"net"
	"os"

	"github.com/mhale/smtpd"
)

func discard(origin net.Addr, from string, to []string, data []byte) error {
	return nil
}

func main() {
	srv := &smtpd.Server{
		Addr:    os.Args[1],
		Handler: discard,
		Appname: "gosink",
		MaxSize: 0, // no limit, so that the 50 MB scenario is accepted
	}
	log.Fatal(srv.ListenAndServe())
}
