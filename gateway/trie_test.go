package gateway

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/udpgw"
)

// TestTrieMatchesLikeMatch: for random filters and topics over a small alphabet
// (so that they collide), the trie finds exactly the filters Match accepts, also
// after removals.
func TestTrieMatchesLikeMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "", "$x"}
	randTopic := func() string {
		n := 1 + r.IntN(4)
		var ls []string
		for range n {
			ls = append(ls, levels[r.IntN(len(levels))])
		}
		return strings.Join(ls, "/")
	}
	randFilter := func() string {
		n := 1 + r.IntN(4)
		var ls []string
		for i := range n {
			switch x := r.IntN(6); {
			case x == 0:
				ls = append(ls, "+")
			case x == 1 && i == n-1:
				ls = append(ls, "#")
			default:
				ls = append(ls, levels[r.IntN(len(levels))])
			}
		}
		return strings.Join(ls, "/")
	}
	for round := range 50 {
		var tr trie
		byPtr := map[*filterSubs]string{}
		live := map[string]*filterSubs{}
		for range 30 {
			f := randFilter()
			if _, ok := live[f]; ok {
				continue
			}
			fs := &filterSubs{}
			live[f], byPtr[fs] = fs, f
			tr.insert(f, fs)
		}
		for f := range live { // remove about a third
			if r.IntN(3) == 0 {
				tr.remove(f)
				delete(live, f)
			}
		}
		for range 100 {
			topic := randTopic()
			var got, want []string
			tr.match(topic, func(fs *filterSubs) { got = append(got, byPtr[fs]) })
			for f := range live {
				if udpgw.MatchTopic(f, topic) {
					want = append(want, f)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d, topic %q: trie matched %q, Match accepts %q", round, topic, got, want)
			}
		}
	}
}

func TestTrieRemovePrunes(t *testing.T) {
	var tr trie
	tr.insert("a/+/c", &filterSubs{})
	tr.insert("a/#", &filterSubs{})
	tr.remove("a/+/c")
	tr.remove("a/#")
	if !tr.root.empty() {
		t.Fatalf("nodes left after removing every filter: %+v", tr.root)
	}
}

// BenchmarkDispatchManyFilters: one broker message against 100 000 per-device
// filters (cmd/{device}) and a few wildcards, the shape of a large deployment.
func BenchmarkDispatchManyFilters(b *testing.B) {
	var tr trie
	for i := range 100000 {
		tr.insert(fmt.Sprintf("cmd/dev%d", i), &filterSubs{})
	}
	tr.insert("cmd/+", &filterSubs{})
	tr.insert("#", &filterSubs{})
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		tr.match("cmd/dev4242", func(*filterSubs) { n++ })
		if n != 3 {
			b.Fatalf("matched %d filters, want 3", n)
		}
	}
}

// BenchmarkDispatchManyFiltersLinear is the baseline the trie replaced.
func BenchmarkDispatchManyFiltersLinear(b *testing.B) {
	var filters []string
	for i := range 100000 {
		filters = append(filters, fmt.Sprintf("cmd/dev%d", i))
	}
	filters = append(filters, "cmd/+", "#")
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for _, f := range filters {
			if udpgw.MatchTopic(f, "cmd/dev4242") {
				n++
			}
		}
		if n != 3 {
			b.Fatalf("matched %d filters, want 3", n)
		}
	}
}
