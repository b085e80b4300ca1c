package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAppendMessage(t *testing.T) {
	for _, fx := range messageFixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := AppendMessage(nil, fx.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, fx.raw) {
				t.Fatalf("got  % x\nwant % x", got, fx.raw)
			}
			// Appending after existing bytes keeps them.
			got, err = AppendMessage([]byte{0xAA}, fx.msg)
			if err != nil || got[0] != 0xAA || !bytes.Equal(got[1:], fx.raw) {
				t.Fatalf("append after a prefix: % x, %v", got, err)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	for _, fx := range messageFixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := DecodeMessage(fx.raw)
			if err != nil {
				t.Fatal(err)
			}
			want := fx.msg
			if len(want.Payload) == 0 {
				want.Payload = nil // an empty payload decodes as nil
			}
			if !got.Enqueued.Equal(want.Enqueued) {
				t.Fatalf("Enqueued %v, want %v", got.Enqueued, want.Enqueued)
			}
			got.Enqueued, want.Enqueued = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %#v\nwant %#v", got, want)
			}
			if err := checkMessage(fx.raw); err != nil {
				t.Fatalf("checkMessage: %v", err)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	for _, tc := range messageDecodeErrors {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMessage(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeMessage(% x) = %#v, %v; want %v", tc.raw, m, err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "store: decode message: ") {
				t.Errorf("error %q lacks its context", err)
			}
			if err := checkMessage(tc.raw); !errors.Is(err, tc.want) {
				t.Errorf("checkMessage = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestDecodeMessageCopies checks that a decoded message shares no memory with
// its record, which for bbolt is valid only inside the transaction.
func TestDecodeMessageCopies(t *testing.T) {
	raw := append([]byte{}, messageFixtures[0].raw...)
	m, err := DecodeMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		raw[i] = 0
	}
	if string(m.Payload) != "hi" || m.Topic != "a/b" || m.Device != "d1" {
		t.Fatalf("decoded message changed with its input: %#v", m)
	}
}

func TestAppendMessageErrors(t *testing.T) {
	long := strings.Repeat("x", 1<<16)
	for _, tc := range []struct {
		name string
		m    Message
		want error
	}{
		{"qos_3", Message{QoS: 3}, ErrBadValue},
		{"device_64KiB", Message{Device: long}, ErrFieldTooLong},
		{"listener_64KiB", Message{Listener: long}, ErrFieldTooLong},
		{"topic_64KiB", Message{Topic: long}, ErrFieldTooLong},
		{"year_2300", Message{Enqueued: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrFieldTooLong},
		{"year_1600", Message{Enqueued: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrFieldTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AppendMessage(nil, tc.m)
			if !errors.Is(err, tc.want) || b != nil {
				t.Fatalf("AppendMessage = % x, %v; want %v", b, err, tc.want)
			}
		})
	}
}

// TestMessageOverhead keeps the documented fixed size of a record true.
func TestMessageOverhead(t *testing.T) {
	b, err := AppendMessage(nil, Message{})
	if err != nil || len(b) != messageOverhead {
		t.Fatalf("empty message record is %d octets (%v), documented %d", len(b), err, messageOverhead)
	}
}
