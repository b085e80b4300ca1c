package mqttsn

import "math/rand/v2"

// topicTable holds one client's registered topic ids, assigned by the gateway
// for both directions (MQTT-SN 1.2 §6.5). Most devices use a handful of topics,
// so it starts as a small slice searched linearly (a few dozen bytes) and turns
// into two maps past smallTopics entries.
type topicTable struct {
	list   []topicEntry // while small
	byID   map[uint16]topicEntry
	byName map[string]uint16
	next   uint16
}

type topicEntry struct {
	name   string
	id     uint16
	origin regOrigin
}

// regOrigin says which exchange registered a topic id; the gateway assigns
// every id (MQTT-SN 1.2 §6.5), the origin is kept in the session record.
type regOrigin uint8

const (
	regClient    regOrigin = iota // the client's REGISTER (§6.5)
	regGateway                    // the gateway's REGISTER, before a PUBLISH (§6.5)
	regSubscribe                  // the SUBACK of a SUBSCRIBE by name (§6.9)
	numRegOrigins
)

const smallTopics = 16

func (t *topicTable) len() int {
	if t.byID != nil {
		return len(t.byID)
	}
	return len(t.list)
}

func (t *topicTable) name(id uint16) (string, bool) {
	if t.byID != nil {
		e, ok := t.byID[id]
		return e.name, ok
	}
	for _, e := range t.list {
		if e.id == id {
			return e.name, true
		}
	}
	return "", false
}

func (t *topicTable) id(name string) (uint16, bool) {
	if t.byName != nil {
		id, ok := t.byName[name]
		return id, ok
	}
	for _, e := range t.list {
		if e.name == name {
			return e.id, true
		}
	}
	return 0, false
}

// add returns the id of name, assigning the next free one (registered by
// origin); ok is false when the table already holds max ids.
func (t *topicTable) add(name string, max int, origin regOrigin) (id uint16, ok bool) {
	if id, ok := t.id(name); ok {
		return id, true
	}
	if t.len() >= max {
		return 0, false
	}
	for {
		t.next++
		if t.next == 0 || t.next == 0xFFFF { // 0x0000 and 0xFFFF are reserved (§5.3.11)
			t.next = 1
		}
		if _, used := t.name(t.next); !used {
			break
		}
	}
	id = t.next
	t.put(topicEntry{name, id, origin})
	return id, true
}

// addRandom is add with a random free id rather than the next one: an id
// nobody can guess, for a client whose address is not proven yet
// (unproven.go). The sequence add follows is left as it is.
func (t *topicTable) addRandom(name string, max int, origin regOrigin) (id uint16, ok bool) {
	if id, ok := t.id(name); ok {
		return id, true
	}
	if t.len() >= max {
		return 0, false
	}
	for {
		id = uint16(rand.Uint32())
		if id == 0 || id == 0xFFFF { // reserved (§5.3.11)
			continue
		}
		if _, used := t.name(id); !used {
			break
		}
	}
	t.put(topicEntry{name, id, origin})
	return id, true
}

// put records e, whose id and name are both new to the table.
func (t *topicTable) put(e topicEntry) {
	if t.byID == nil && len(t.list) < smallTopics {
		t.list = append(t.list, e)
		return
	}
	if t.byID == nil {
		t.byID = make(map[uint16]topicEntry, 2*smallTopics)
		t.byName = make(map[string]uint16, 2*smallTopics)
		for _, e := range t.list {
			t.byID[e.id], t.byName[e.name] = e, e.id
		}
		t.list = nil
	}
	t.byID[e.id], t.byName[e.name] = e, e.id
}

// each calls fn for every registration, in no particular order.
func (t *topicTable) each(fn func(topicEntry)) {
	if t.byID != nil {
		for _, e := range t.byID {
			fn(e)
		}
		return
	}
	for _, e := range t.list {
		fn(e)
	}
}

func (t *topicTable) remove(id uint16) {
	if t.byID != nil {
		if e, ok := t.byID[id]; ok {
			delete(t.byID, id)
			delete(t.byName, e.name)
		}
		return
	}
	for i, e := range t.list {
		if e.id == id {
			t.list = append(t.list[:i], t.list[i+1:]...)
			return
		}
	}
}
