package gateway

import "strings"

// trie indexes the hub's filters by topic level, so a broker message visits only the
// filters that can match it instead of every filter (with one filter per device,
// a linear scan would cost O(devices) per message). hub.mu guards it.
//
// A node stands for a path of filter levels; a filter ending there is in exact,
// one ending in "/#" (or "#") at that node is in hash (MQTT 3.1.1 §4.7.1).
type trie struct {
	root trieNode
}

type trieNode struct {
	children map[string]*trieNode // literal levels
	plus     *trieNode            // '+'
	exact    *filterSubs          // a filter ending at this node
	hash     *filterSubs          // a filter ending in '#' below this node
}

func (t *trie) insert(filter string, fs *filterSubs) {
	n := &t.root
	for _, l := range strings.Split(filter, "/") {
		switch l {
		case "#":
			n.hash = fs
			return
		case "+":
			if n.plus == nil {
				n.plus = &trieNode{}
			}
			n = n.plus
		default:
			if n.children == nil {
				n.children = map[string]*trieNode{}
			}
			c := n.children[l]
			if c == nil {
				c = &trieNode{}
				n.children[l] = c
			}
			n = c
		}
	}
	n.exact = fs
}

// remove deletes filter and prunes the nodes it leaves empty.
func (t *trie) remove(filter string) {
	t.root.remove(strings.Split(filter, "/"))
}

// remove reports whether n is now empty.
func (n *trieNode) remove(levels []string) bool {
	if len(levels) == 0 {
		n.exact = nil
		return n.empty()
	}
	switch l := levels[0]; l {
	case "#":
		n.hash = nil
	case "+":
		if n.plus != nil && n.plus.remove(levels[1:]) {
			n.plus = nil
		}
	default:
		if c := n.children[l]; c != nil && c.remove(levels[1:]) {
			delete(n.children, l)
		}
	}
	return n.empty()
}

func (n *trieNode) empty() bool {
	return len(n.children) == 0 && n.plus == nil && n.exact == nil && n.hash == nil
}

// match calls fn for every filter matching topic. Wildcards at the first level do
// not match topics beginning with '$' (§4.7.2).
func (t *trie) match(topic string, fn func(*filterSubs)) {
	t.root.match(topic, true, strings.HasPrefix(topic, "$"), fn)
}

func (n *trieNode) match(topic string, first, dollar bool, fn func(*filterSubs)) {
	wild := !(first && dollar)
	if n.hash != nil && wild {
		fn(n.hash) // "a/#" matches "a" and everything below it
	}
	level, rest, more := strings.Cut(topic, "/")
	next := func(c *trieNode) {
		if more {
			c.match(rest, false, dollar, fn)
			return
		}
		if c.exact != nil {
			fn(c.exact)
		}
		if c.hash != nil {
			fn(c.hash) // "a/b/#" matches "a/b"
		}
	}
	if c := n.children[level]; c != nil {
		next(c)
	}
	if n.plus != nil && wild {
		next(n.plus)
	}
}
