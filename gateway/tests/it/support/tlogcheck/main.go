// tlogcheck reads a MeshGuard gateway's audit log as any transparency-log client would, with
// Go's golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog (Debian's
// golang-golang-x-mod-dev) and nothing of the gateway's code: the signed checkpoint and the
// hash tiles from the unauthenticated C2SP tlog-tiles endpoints, the entry bundles from the
// admin API. It prints one JSON object; any failed check exits 1 naming it.
//
//	tlogcheck -url http://127.0.0.1:PORT -vkey VKEY -token ADMIN_TOKEN [-old CHECKPOINT_FILE]
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var (
	base  = flag.String("url", "", "the gateway's base URL")
	vkey  = flag.String("vkey", "", "the log's note verifier key")
	token = flag.String("token", "", "an admin token, for the entry bundles")
	old   = flag.String("old", "", "an earlier signed checkpoint to prove the log consistent with")
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", args...)
	os.Exit(1)
}

func get(path string, auth bool) ([]byte, int) {
	req, err := http.NewRequest("GET", *base+path, nil)
	if err != nil {
		fail("%v", err)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fail("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fail("GET %s: %v", path, err)
	}
	return body, resp.StatusCode
}

// indexPath spells N as C2SP tlog-tiles does: 3-digit groups, all but the last prefixed x.
func indexPath(n int64) string {
	s := strconv.FormatInt(n, 10)
	for len(s)%3 != 0 {
		s = "0" + s
	}
	var parts []string
	for i := 0; i < len(s); i += 3 {
		p := s[i : i+3]
		if i+3 < len(s) {
			p = "x" + p
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/")
}

// tilePath is the C2SP path of a tile (no height element, unlike Go's own sumdb paths).
func tilePath(level string, n, w int64) string {
	p := "tile/" + level + "/" + indexPath(n)
	if w < 256 {
		p += ".p/" + strconv.FormatInt(w, 10)
	}
	return p
}

// checkpoint opens a signed checkpoint note and returns its tree.
func checkpoint(text []byte, verifier note.Verifier) (string, tlog.Tree) {
	n, err := note.Open(text, note.VerifierList(verifier))
	if err != nil {
		fail("the checkpoint's signature does not verify: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("the checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size %q: %v", lines[1], err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		fail("checkpoint root %q is not a base64 SHA-256", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return lines[0], tlog.Tree{N: size, Hash: h}
}

type tiles struct{ fetched int }

func (t *tiles) Height() int { return 8 }

func (t *tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		body, status := get("/audit/log/"+tilePath(strconv.Itoa(tile.L), tile.N, int64(tile.W)), false)
		if status != 200 {
			return nil, fmt.Errorf("tile L=%d N=%d W=%d: HTTP %d", tile.L, tile.N, tile.W, status)
		}
		t.fetched++
		out[i] = body
	}
	return out, nil
}

func (t *tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func main() {
	flag.Parse()
	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	text, status := get("/audit/log/checkpoint", false)
	if status != 200 {
		fail("GET /audit/log/checkpoint: HTTP %d", status)
	}
	origin, tree := checkpoint(text, verifier)
	tr := &tiles{}
	hashes := tlog.TileHashReader(tree, tr)
	root, err := tlog.TreeHash(tree.N, hashes)
	if err != nil {
		fail("tree hash from the tiles: %v", err)
	}
	if root != tree.Hash {
		fail("the tiles hash to %v, the checkpoint signs %v", root, tree.Hash)
	}
	// Every entry: read from its bundle, proven in the signed tree.
	records := int64(0)
	for n := int64(0); n*256 < tree.N; n++ {
		w := tree.N - n*256
		if w > 256 {
			w = 256
		}
		bundle, status := get("/admin/audit/log/"+tilePath("entries", n, w), true)
		if status != 200 {
			fail("entry bundle %d (width %d): HTTP %d", n, w, status)
		}
		for i := int64(0); i < w; i++ {
			if len(bundle) < 2 {
				fail("entry bundle %d ends after %d entries", n, i)
			}
			size := int(binary.BigEndian.Uint16(bundle))
			if len(bundle) < 2+size {
				fail("entry bundle %d: entry %d is cut short", n, i)
			}
			data := bundle[2 : 2+size]
			bundle = bundle[2+size:]
			if !json.Valid(data) || !bytes.HasPrefix(data, []byte("{")) {
				fail("entry %d is not a JSON object", n*256+i)
			}
			index := n*256 + i
			proof, err := tlog.ProveRecord(tree.N, index, hashes)
			if err != nil {
				fail("inclusion proof of entry %d: %v", index, err)
			}
			if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, tlog.RecordHash(data)); err != nil {
				fail("entry %d is not in the signed tree: %v", index, err)
			}
			records++
		}
		if len(bundle) != 0 {
			fail("entry bundle %d holds more than %d entries", n, w)
		}
	}
	result := map[string]interface{}{
		"origin":  origin,
		"size":    tree.N,
		"root":    tree.Hash.String(),
		"records": records,
	}
	if *old != "" {
		text, err := os.ReadFile(*old)
		if err != nil {
			fail("%v", err)
		}
		_, before := checkpoint(text, verifier)
		proof, err := tlog.ProveTree(tree.N, before.N, hashes)
		if err != nil {
			fail("consistency proof from %d: %v", before.N, err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, before.N, before.Hash); err != nil {
			fail("the log of %d entries is not an extension of the one of %d: %v", tree.N, before.N, err)
		}
		// The older tree's hash read straight from the same tiles, at the chosen size.
		at, err := tlog.TreeHash(before.N, hashes)
		if err != nil || at != before.Hash {
			fail("the tiles do not give the older checkpoint's root at %d: %v", before.N, err)
		}
		result["consistentFrom"] = before.N
	}
	result["tilesFetched"] = tr.fetched
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}
