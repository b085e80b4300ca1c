package mqttsn

// topicTable holds one client's registered topic ids, assigned by the gateway
// for both directions (MQTT-SN 1.2 §6.5). Most devices use a handful of topics,
// so it starts as a small slice searched linearly (a few dozen bytes) and turns
// into two maps past smallTopics entries.
type topicTable struct {
	list   []topicEntry // while small
	byID   map[uint16]string
	byName map[string]uint16
	next   uint16
}

type topicEntry struct {
	name string
	id   uint16
}

const smallTopics = 16

func (t *topicTable) len() int {
	if t.byID != nil {
		return len(t.byID)
	}
	return len(t.list)
}

func (t *topicTable) name(id uint16) (string, bool) {
	if t.byID != nil {
		n, ok := t.byID[id]
		return n, ok
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

// add returns the id of name, assigning the next free one; ok is false when the
// table already holds max ids.
func (t *topicTable) add(name string, max int) (id uint16, ok bool) {
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
	if t.byID == nil && len(t.list) < smallTopics {
		t.list = append(t.list, topicEntry{name, id})
		return id, true
	}
	if t.byID == nil {
		t.byID = make(map[uint16]string, 2*smallTopics)
		t.byName = make(map[string]uint16, 2*smallTopics)
		for _, e := range t.list {
			t.byID[e.id], t.byName[e.name] = e.name, e.id
		}
		t.list = nil
	}
	t.byID[id], t.byName[name] = name, id
	return id, true
}

func (t *topicTable) remove(id uint16) {
	if t.byID != nil {
		if name, ok := t.byID[id]; ok {
			delete(t.byID, id)
			delete(t.byName, name)
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
