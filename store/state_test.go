package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestState(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions).State()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ops  []Op
		want map[Kind]map[string]string // every kind's records after the ops
	}{
		{
			name: "put",
			ops:  []Op{{Kind: KindMQTTSNSession, Key: "c1", Value: []byte("s1")}},
			want: map[Kind]map[string]string{KindMQTTSNSession: {"c1": "s1"}},
		},
		{
			name: "replace_and_other_kinds",
			ops: []Op{
				{Kind: KindMQTTSNSession, Key: "c1", Value: []byte("s1'")},
				{Kind: KindSession, Key: "c1", Value: []byte("reg")},
				{Kind: KindCoAPObservation, Key: "tok", Value: []byte{}},
			},
			want: map[Kind]map[string]string{
				KindMQTTSNSession:   {"c1": "s1'"},
				KindSession:         {"c1": "reg"},
				KindCoAPObservation: {"tok": ""},
			},
		},
		{
			name: "put_then_delete_in_one_apply",
			ops: []Op{
				{Kind: KindSession, Key: "gone", Value: []byte("x")},
				{Kind: KindSession, Key: "gone", Delete: true},
				{Kind: KindCoAPObservation, Key: "tok", Delete: true},
				{Kind: KindCoAPObservation, Key: "never", Delete: true}, // missing: not an error
			},
			want: map[Kind]map[string]string{
				KindMQTTSNSession: {"c1": "s1'"},
				KindSession:       {"c1": "reg"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Apply(ctx, tc.ops...); err != nil {
				t.Fatal(err)
			}
			for _, k := range Kinds() {
				got := map[string]string{}
				if err := s.Range(k, func(key string, v []byte) bool { got[key] = string(v); return true }); err != nil {
					t.Fatal(err)
				}
				want := tc.want[k]
				if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("%s: %v, want %v", k, got, want)
				}
				for key, v := range want {
					if b, ok, err := s.Get(k, key); err != nil || !ok || string(b) != v {
						t.Errorf("Get(%s, %q) = %q, %v, %v", k, key, b, ok, err)
					}
				}
			}
		})
	}
	if _, ok, err := s.Get(KindSession, "gone"); ok || err != nil {
		t.Fatalf("Get of a deleted key: %v, %v", ok, err)
	}
	if err := s.Delete(ctx, KindMQTTSNSession, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, KindSession, "c2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Get(KindSession, "c2"); !ok || string(v) != "two" {
		t.Fatalf("Get after Put = %q, %v", v, ok)
	}
	if _, ok, _ := s.Get(KindMQTTSNSession, "c1"); ok {
		t.Fatal("deleted record still there")
	}
}

// TestStateRefuses: unknown kinds and bad keys are refused before anything is
// written; one bad op refuses the whole Apply.
func TestStateRefuses(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions).State()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ops  []Op
		want error
	}{
		{"kind_0", []Op{{Kind: 0, Key: "k"}}, ErrUnknownKind},
		{"kind_past_end", []Op{{Kind: kindEnd, Key: "k"}}, ErrUnknownKind},
		{"empty_key", []Op{{Kind: KindSession, Key: ""}}, ErrBadKey},
		{"long_key", []Op{{Kind: KindSession, Key: strings.Repeat("k", MaxKeyLen+1)}}, ErrBadKey},
		{"one_bad_op", []Op{{Kind: KindSession, Key: "ok", Value: []byte("v")}, {Kind: 9, Key: "k"}}, ErrUnknownKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Apply(ctx, tc.ops...); !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
		})
	}
	if _, ok, _ := s.Get(KindSession, "ok"); ok {
		t.Fatal("a refused Apply wrote its first op")
	}
	if _, _, err := s.Get(Kind(42), "k"); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Get of an unknown kind: %v", err)
	}
	if err := s.Range(Kind(42), func(string, []byte) bool { return true }); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Range of an unknown kind: %v", err)
	}
	if err := s.Put(ctx, KindSession, strings.Repeat("k", MaxKeyLen), nil); err != nil {
		t.Fatalf("the longest key: %v", err)
	}
}

// TestStateRangeChunks ranges over more records than one read chunk, in key
// order, stopping when asked, and deleting from the callback.
func TestStateRangeChunks(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions).State()
	ctx := context.Background()
	const n = rangeChunk*2 + 3
	var ops []Op
	for i := range n {
		ops = append(ops, Op{Kind: KindCoAPObservation, Key: fmt.Sprintf("k%04d", i), Value: []byte{byte(i)}})
	}
	if err := s.Apply(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := s.Range(KindCoAPObservation, func(k string, v []byte) bool {
		if want := fmt.Sprintf("k%04d", i); k != want || v[0] != byte(i) {
			t.Fatalf("record %d: %q = %x, want %q", i, k, v, want)
		}
		if err := s.Delete(ctx, KindCoAPObservation, k); err != nil {
			t.Fatal(err)
		}
		i++
		return true
	})
	if err != nil || i != n {
		t.Fatalf("Range saw %d of %d records: %v", i, n, err)
	}
	left := 0
	_ = s.Range(KindCoAPObservation, func(string, []byte) bool { left++; return true })
	if left != 0 {
		t.Fatalf("%d records left after deleting all", left)
	}
	if err := s.Put(ctx, KindSession, "a", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, KindSession, "b", nil); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_ = s.Range(KindSession, func(string, []byte) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Range went on after false: %d calls", calls)
	}
}

// TestKinds keeps the bucket names, which are part of the file format.
func TestKinds(t *testing.T) {
	var names []string
	for _, k := range Kinds() {
		names = append(names, string(stateBucket(k)))
	}
	if got := strings.Join(names, " "); got != "state/session state/mqttsn-session state/coap-observation" {
		t.Fatalf("bucket names changed: %s", got)
	}
	if Kind(0).String() != "Kind(0)" {
		t.Fatal(Kind(0).String())
	}
}
