package storage

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"sync"
	"time"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

var idState struct {
	sync.Mutex
	ms   uint64
	hi   uint16 // top 16 random bits
	lo   uint64 // low 64 random bits
	init bool
}

// NewID returns a new identifier "prefix_" followed by 26 characters: a
// 48-bit millisecond timestamp then 80 bits that are random for the first
// ID of each millisecond and incremented after, so IDs from one process
// sort in creation order. Prefixes in use: iss, dns, wf, crt, tok, aud, rec.
func NewID(prefix string) string {
	ms := uint64(time.Now().UnixMilli())
	idState.Lock()
	if !idState.init || ms > idState.ms {
		var r [10]byte
		if _, err := rand.Read(r[:]); err != nil {
			panic("storage: reading random bytes: " + err.Error())
		}
		idState.ms, idState.init = ms, true
		idState.hi = binary.BigEndian.Uint16(r[:2]) >> 1 // leave room to increment
		idState.lo = binary.BigEndian.Uint64(r[2:])
	} else {
		idState.lo++
		if idState.lo == 0 {
			idState.hi++
		}
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], idState.ms<<16|uint64(idState.hi))
	binary.BigEndian.PutUint64(b[8:], idState.lo)
	idState.Unlock()
	return prefix + "_" + idEncoding.EncodeToString(b[:])
}
