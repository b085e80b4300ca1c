// Package mapping is the rules table compiled from the config: it turns one uplink
// datagram into the MQTT publishes it stands for (and the ack that answers it), gives
// a device its class (keepalive, will, birth), and turns an MQTT message into a
// downlink datagram for a plain-UDP device.
//
// A rule belongs to a listener. Map tries the listener's rules in file order and the
// first whose match accepts the datagram wins; the rule then extracts a device id and
// named fields (JSON pointers, regex groups, binary numbers and byte slices) and
// renders each publish's topic and payload from templates compiled by Compile.
//
// Match conditions all must hold: hex_prefix (hex digits, white space allowed between
// bytes), text_prefix, regex (RE2 over the payload as text, unanchored: write ^ and $
// to match the whole payload), min_len and max_len in bytes, json (a JSON object). A
// rule with no condition takes every datagram of its listener; Compile warns about
// the rules after it.
//
// The package is pure: no I/O, no logging, no goroutines, no package state, no clock
// (durations are values it hands on). A Table is immutable once compiled, so any
// number of goroutines may call Map at once, each with its own Result, and Class,
// Will, Birth and Encode likewise. Nothing blocks.
//
// # Templates
//
// A topic or payload template is text with {name} placeholders: {device}, {listener},
// {gateway}, any field of the rule, any named group of match.regex (a field of the
// same name wins over a group, a built-in over both). {{ and }} are literal braces;
// any other brace is a compile error, as is an unknown name (the problem lists the
// known ones). The listener's mountpoint is prefixed to every topic as it is written,
// with no separator added ("site1/" + "sensors/{device}").
//
// # Topic injection
//
// The device controls the values that land in topics, so a value could otherwise add
// levels ("a/b"), turn a topic into a wildcard ("+", "#"), or make it malformed (NUL,
// bytes that are not UTF-8, MQTT 3.1.1 §1.5.3). Map does not escape or strip such a
// value, because two different device ids would then collide on one topic. It rejects
// the datagram instead: a value substituted into a topic must be non-empty, valid
// UTF-8 and free of '/', '+', '#' and NUL, and may not start the topic with '$'
// (reserved for the broker, §4.7.2). Otherwise Map returns an error wrapping
// ErrUnsafeTopic that names the rule, the placeholder and the quoted value, and the
// datagram produces no publishes at all (none of its topics is half trusted). Topic
// literals are checked once by Compile: no '+' or '#', no NUL. Payload templates take
// values as they are: a payload has no structure for a value to break out of, except
// that a template writing JSON by hand must quote string values itself.
//
// # Acks
//
// A rule with [rule.ack] also renders an ack, from a template of the rule's names or
// fixed hex bytes, into Result.Ack; the gateway sends it once the broker has the
// publishes. With ack.dedup, Result.DedupKey is the rule's name, a NUL and the
// rendered dedup template, and DedupWindow how long the gateway remembers it.
//
// # Classes
//
// A [[class]] applies to the devices of its listeners (all when none are listed)
// whose id matches its glob (path.Match syntax, but '*' and '?' match '/' too: an
// id is not a path, and the default "*" takes every device); Table.Class takes
// the first in file order. Its will and birth are templates of {device}, {listener},
// {addr}, {gateway} and {class}, rendered per device by Class.Will and Class.Birth
// with the listener's mountpoint prefixed. Their topics follow the rule of Map's
// topics below: a value that would break a level is an error wrapping
// ErrUnsafeTopic, never escaped.
//
// # Downlinks
//
// A [[downlink]] is an MQTT filter whose {name} levels capture one whole level each
// ({device} is required); Downlink.Filter is what the gateway subscribes to (the
// mountpoint prefixed, captures as '+'). Downlink.Encode matches a delivered topic
// by MQTT's rules ('+' one level, '#' the rest including the parent, no wildcard
// first level for a '$' topic) and renders the datagram: the payload as it is, a
// template of the captures, {topic}, {payload}, {listener} and {gateway}, or
// numbers from a JSON payload packed in order, each in its type's width and byte
// order. A payload that cannot be packed is an error wrapping ErrDecode.
//
// # Values
//
// A binary integer with neither scale nor add stays an integer. With scale 0.1, 0.01,
// ... 1e-9 and no add, an integer is scaled exactly in decimal (215 × 0.1 prints 21.5,
// 2^64-1 × 1e-9 prints 18446744073.709551615). Otherwise value*scale + add is computed
// in float64 and printed with 15 significant digits, which hides binary rounding noise
// (0.1 + 0.2 prints 0.3). A float, or a scaled value, that is NaN or infinite becomes
// null. Byte slices render
// as lowercase hex, or as text with trailing NUL padding removed ("ascii"). A JSON
// pointer's value keeps its JSON type; a JSON string is unescaped for templates and
// topics (bytes that are not UTF-8 are kept, so a topic rejects them rather than two
// ids collapsing into U+FFFD) and copied as it came into "json" payloads; where an
// object repeats a key, the first one counts. A regex group is text, or with a type (or
// scale/add) a number parsed from the text. A value that cannot be extracted (a binary
// field beyond the datagram's end, a pointer that matches nothing, a group that did not
// take part in the match, an empty device id) makes Map return an error wrapping
// ErrDecode.
//
// # Cost
//
// Compile does all parsing: match prefixes, regexes, JSON pointers, templates, the key
// order of "json" payloads. Map validates a JSON payload with one scan and resolves
// pointers over the raw bytes (no encoding/json, no maps). It renders into the
// Result's scratch buffers and hands out two allocations per datagram whatever the
// number of publishes: one string holding the device, field values, topics and the
// dedup key, and one byte slice holding the payloads and the ack. A rule whose regex
// groups are used costs one more (regexp's submatch indices). Classes and downlinks
// run once per session start or broker message and allocate freely.
package mapping
