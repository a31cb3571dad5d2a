// SPDX-License-Identifier: Apache-2.0

// A current etcd server for the cluster tests (issue 24): Debian 12 ships
// etcd 3.4, which is end of life, and front-ends in the field run 3.6 or
// newer. Built from the Go module proxy at the version pinned in go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
