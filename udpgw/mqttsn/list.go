package mqttsn

// links are one element's place in a list: intrusive, so that moving an
// element (every datagram of an unproven client) allocates nothing.
type links[T any] struct{ prev, next *T }

// list is a doubly linked list of *T whose links the elements hold (at gives
// them): oldest (least recently touched) first. The caller knows whether an
// element is in it; the zero list with at set is empty. Not safe for
// concurrent use: its owner's lock guards it.
type list[T any] struct {
	head, tail *T
	n          int
	at         func(*T) *links[T]
}

// pushBack appends x, which is in no list.
func (l *list[T]) pushBack(x *T) {
	lx := l.at(x)
	lx.prev, lx.next = l.tail, nil
	if l.tail != nil {
		l.at(l.tail).next = x
	} else {
		l.head = x
	}
	l.tail = x
	l.n++
}

// remove takes x, which is in l, out of it.
func (l *list[T]) remove(x *T) {
	lx := l.at(x)
	if lx.prev != nil {
		l.at(lx.prev).next = lx.next
	} else {
		l.head = lx.next
	}
	if lx.next != nil {
		l.at(lx.next).prev = lx.prev
	} else {
		l.tail = lx.prev
	}
	lx.prev, lx.next = nil, nil
	l.n--
}

// moveToBack makes x, which is in l, the most recently touched.
func (l *list[T]) moveToBack(x *T) {
	if l.tail == x {
		return
	}
	l.remove(x)
	l.pushBack(x)
}
