package store

import "errors"

// Errors of the store. Operations wrap them with the store's file and what was
// being done, e.g. "store: /var/lib/mqttgw/mqttgw.db: append: store full";
// test with errors.Is.
var (
	// ErrFull: an Append would take the queue beyond Options.MaxMessages or Options.MaxBytes; nothing was written (issue 10: the device gets the protocol's congestion answer, never a silent drop).
	ErrFull = errors.New("store full")
	// ErrTooLarge: one record is larger than Options.MaxBytes or than the backend can hold, so it can never be stored.
	ErrTooLarge = errors.New("record too large")
	// ErrClosed: the store was closed before or during the call.
	ErrClosed = errors.New("store closed")
	// ErrInUse: another process (or another Open in this one) holds the store's file lock.
	ErrInUse = errors.New("in use by another process")
	// ErrCorrupt: the file is not a readable bbolt file (random bytes, truncated, damaged pages) or holds a record that does not decode; Open never repairs, truncates or rewrites it.
	ErrCorrupt = errors.New("damaged or not a store file")
	// ErrForeign: the file is a valid bbolt file that mqttgw did not create (no meta bucket, or another magic string).
	ErrForeign = errors.New("not an mqttgw store")
	// ErrNewerFormat: the file was written by a newer mqttgw with a format version this build cannot read.
	ErrNewerFormat = errors.New("written by a newer mqttgw")
	// ErrUnknownKind: a state operation names a Kind that is not one of the package's constants.
	ErrUnknownKind = errors.New("unknown state kind")
	// ErrBadKey: a state key is empty or longer than MaxKeyLen.
	ErrBadKey = errors.New("key empty or too long")
)

// Record codec errors, returned by Decoder, DecodeMessage and AppendMessage.
var (
	// ErrTruncated: a record ends before one of its fields is complete.
	ErrTruncated = errors.New("truncated record")
	// ErrTrailing: a record has bytes after its last field.
	ErrTrailing = errors.New("bytes after the last field")
	// ErrRecordVersion: the record's version byte is 0 or newer than the reader knows.
	ErrRecordVersion = errors.New("unknown record version")
	// ErrBadValue: a field holds a value outside its range (a QoS above 2, reserved flag bits, a bool other than 0 or 1, a count larger than the rest of the record).
	ErrBadValue = errors.New("field value out of range")
	// ErrFieldTooLong: an encoder was given a field longer than its length prefix can describe, or a time outside the range of Unix nanoseconds.
	ErrFieldTooLong = errors.New("field too long for its length prefix")
)
