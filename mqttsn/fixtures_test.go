package mqttsn

import "bytes"

// fixture is one valid message and its canonical encoding. The table is
// shared by the encode tests, the decode tests and the fuzz seed corpus
// (f.Add in FuzzDecode, and the files in testdata/fuzz/FuzzDecode, which
// TestFuzzCorpusMatchesFixtures keeps in sync).
type fixture struct {
	name string
	msg  Message
	raw  []byte
}

// long300 is a 300-octet payload: a PUBLISH carrying it needs the 3-octet
// Length form.
var long300 = bytes.Repeat([]byte{'x'}, 300)

var fixtures = []fixture{
	{
		name: "advertise",
		msg:  &Advertise{GwID: 7, Duration: 900},
		raw: []byte{
			0x05,       // Length 5
			0x00,       // MsgType ADVERTISE
			0x07,       // GwId 7
			0x03, 0x84, // Duration 900 s
		},
	},
	{
		name: "searchgw",
		msg:  &SearchGW{Radius: 1},
		raw: []byte{
			0x03, // Length 3
			0x01, // MsgType SEARCHGW
			0x01, // Radius 1
		},
	},
	{
		name: "gwinfo_from_gateway",
		msg:  &GWInfo{GwID: 7},
		raw: []byte{
			0x03, // Length 3
			0x02, // MsgType GWINFO
			0x07, // GwId 7, no GwAdd
		},
	},
	{
		name: "gwinfo_from_client",
		msg:  &GWInfo{GwID: 7, GwAdd: []byte{192, 168, 1, 9}},
		raw: []byte{
			0x07,           // Length 7
			0x02,           // MsgType GWINFO
			0x07,           // GwId 7
			192, 168, 1, 9, // GwAdd (4 octets)
		},
	},
	{
		name: "connect",
		msg:  &Connect{Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "dev1"},
		raw: []byte{
			0x0A,       // Length 10
			0x04,       // MsgType CONNECT
			0x04,       // Flags: CleanSession
			0x01,       // ProtocolId 0x01
			0x00, 0x3C, // Duration 60 s
			'd', 'e', 'v', '1', // ClientId "dev1"
		},
	},
	{
		name: "connect_will",
		msg:  &Connect{Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 30, ClientID: "c"},
		raw: []byte{
			0x07,       // Length 7
			0x04,       // MsgType CONNECT
			0x0C,       // Flags: Will | CleanSession
			0x01,       // ProtocolId 0x01
			0x00, 0x1E, // Duration 30 s
			'c', // ClientId "c"
		},
	},
	{
		name: "connack_accepted",
		msg:  &Connack{ReturnCode: Accepted},
		raw: []byte{
			0x03, // Length 3
			0x05, // MsgType CONNACK
			0x00, // ReturnCode accepted
		},
	},
	{
		name: "connack_congestion",
		msg:  &Connack{ReturnCode: Congestion},
		raw: []byte{
			0x03, // Length 3
			0x05, // MsgType CONNACK
			0x01, // ReturnCode rejected: congestion
		},
	},
	{
		name: "willtopicreq",
		msg:  &WillTopicReq{},
		raw: []byte{
			0x02, // Length 2
			0x06, // MsgType WILLTOPICREQ
		},
	},
	{
		name: "willtopic",
		msg:  &WillTopic{Flags: Flags{QoS: QoS1, Retain: true}, Topic: "st/d1"},
		raw: []byte{
			0x08,                    // Length 8
			0x07,                    // MsgType WILLTOPIC
			0x30,                    // Flags: QoS 1 (01), Retain
			's', 't', '/', 'd', '1', // WillTopic "st/d1"
		},
	},
	{
		name: "willtopic_empty",
		msg:  &WillTopic{},
		raw: []byte{
			0x02, // Length 2
			0x07, // MsgType WILLTOPIC, no Flags, no topic: delete the will
		},
	},
	{
		name: "willmsgreq",
		msg:  &WillMsgReq{},
		raw: []byte{
			0x02, // Length 2
			0x08, // MsgType WILLMSGREQ
		},
	},
	{
		name: "willmsg",
		msg:  &WillMsg{WillMsg: []byte("gone")},
		raw: []byte{
			0x06,               // Length 6
			0x09,               // MsgType WILLMSG
			'g', 'o', 'n', 'e', // WillMsg "gone"
		},
	},
	{
		name: "register_from_client",
		msg:  &Register{TopicID: 0, MsgID: 1, TopicName: "a/b"},
		raw: []byte{
			0x09,       // Length 9
			0x0A,       // MsgType REGISTER
			0x00, 0x00, // TopicId 0 (client)
			0x00, 0x01, // MsgId 1
			'a', '/', 'b', // TopicName "a/b"
		},
	},
	{
		name: "register_from_gateway",
		msg:  &Register{TopicID: 0x0102, MsgID: 0x0304, TopicName: "x"},
		raw: []byte{
			0x07,       // Length 7
			0x0A,       // MsgType REGISTER
			0x01, 0x02, // TopicId 0x0102
			0x03, 0x04, // MsgId 0x0304
			'x', // TopicName "x"
		},
	},
	{
		name: "regack",
		msg:  &Regack{TopicID: 5, MsgID: 1, ReturnCode: Accepted},
		raw: []byte{
			0x07,       // Length 7
			0x0B,       // MsgType REGACK
			0x00, 0x05, // TopicId 5
			0x00, 0x01, // MsgId 1
			0x00, // ReturnCode accepted
		},
	},
	{
		name: "publish_qos0",
		msg:  &Publish{Flags: Flags{QoS: QoS0}, TopicID: 5, MsgID: 0, Data: []byte("21.5")},
		raw: []byte{
			0x0B,       // Length 11
			0x0C,       // MsgType PUBLISH
			0x00,       // Flags: QoS 0, TopicIdType normal
			0x00, 0x05, // TopicId 5
			0x00, 0x00, // MsgId 0 (QoS 0)
			'2', '1', '.', '5', // Data "21.5"
		},
	},
	{
		name: "publish_qos1_dup_retain",
		msg:  &Publish{Flags: Flags{DUP: true, QoS: QoS1, Retain: true}, TopicID: 5, MsgID: 0x1234, Data: []byte{0xFF}},
		raw: []byte{
			0x08,       // Length 8
			0x0C,       // MsgType PUBLISH
			0xB0,       // Flags: DUP, QoS 1 (01), Retain, TopicIdType normal
			0x00, 0x05, // TopicId 5
			0x12, 0x34, // MsgId 0x1234
			0xFF, // Data
		},
	},
	{
		name: "publish_qos2_predefined_empty",
		msg:  &Publish{Flags: Flags{QoS: QoS2, TopicIDType: TopicPredefined}, TopicID: 1, MsgID: 9},
		raw: []byte{
			0x07,       // Length 7
			0x0C,       // MsgType PUBLISH
			0x41,       // Flags: QoS 2 (10), TopicIdType predefined (01)
			0x00, 0x01, // TopicId 1
			0x00, 0x09, // MsgId 9, no Data
		},
	},
	{
		name: "publish_qosm1_short",
		msg:  &Publish{Flags: Flags{QoS: QoSMinusOne, TopicIDType: TopicShort}, TopicID: 'h'<<8 | 'i', Data: []byte("1")},
		raw: []byte{
			0x08,     // Length 8
			0x0C,     // MsgType PUBLISH
			0x62,     // Flags: QoS -1 (11), TopicIdType short (10)
			'h', 'i', // TopicId: short topic name "hi"
			0x00, 0x00, // MsgId 0 (QoS -1)
			'1', // Data "1"
		},
	},
	{
		name: "publish_long_form",
		msg:  &Publish{Flags: Flags{QoS: QoS1}, TopicID: 5, MsgID: 2, Data: long300},
		raw: append([]byte{
			0x01, 0x01, 0x35, // Length: 3-octet form, 309 = 4 header + 5 fields + 300 data
			0x0C,       // MsgType PUBLISH
			0x20,       // Flags: QoS 1
			0x00, 0x05, // TopicId 5
			0x00, 0x02, // MsgId 2
		}, long300...), // Data: 300 × 'x'
	},
	{
		name: "puback_invalid_topic",
		msg:  &Puback{TopicID: 5, MsgID: 0x1234, ReturnCode: InvalidTopicID},
		raw: []byte{
			0x07,       // Length 7
			0x0D,       // MsgType PUBACK
			0x00, 0x05, // TopicId 5
			0x12, 0x34, // MsgId 0x1234
			0x02, // ReturnCode rejected: invalid topic ID
		},
	},
	{
		name: "pubcomp",
		msg:  &Pubcomp{MsgID: 9},
		raw: []byte{
			0x04,       // Length 4
			0x0E,       // MsgType PUBCOMP
			0x00, 0x09, // MsgId 9
		},
	},
	{
		name: "pubrec",
		msg:  &Pubrec{MsgID: 9},
		raw: []byte{
			0x04,       // Length 4
			0x0F,       // MsgType PUBREC
			0x00, 0x09, // MsgId 9
		},
	},
	{
		name: "pubrel",
		msg:  &Pubrel{MsgID: 9},
		raw: []byte{
			0x04,       // Length 4
			0x10,       // MsgType PUBREL
			0x00, 0x09, // MsgId 9
		},
	},
	{
		name: "subscribe_name_wildcard",
		msg:  &Subscribe{Flags: Flags{QoS: QoS1}, MsgID: 3, TopicName: "s/+/t"},
		raw: []byte{
			0x0A,       // Length 10
			0x12,       // MsgType SUBSCRIBE
			0x20,       // Flags: QoS 1, TopicIdType normal (topic name)
			0x00, 0x03, // MsgId 3
			's', '/', '+', '/', 't', // TopicName "s/+/t"
		},
	},
	{
		name: "subscribe_predefined",
		msg:  &Subscribe{Flags: Flags{DUP: true, QoS: QoS2, TopicIDType: TopicPredefined}, MsgID: 4, TopicID: 0x0010},
		raw: []byte{
			0x07,       // Length 7
			0x12,       // MsgType SUBSCRIBE
			0xC1,       // Flags: DUP, QoS 2 (10), TopicIdType predefined
			0x00, 0x04, // MsgId 4
			0x00, 0x10, // TopicId 16
		},
	},
	{
		name: "subscribe_short",
		msg:  &Subscribe{Flags: Flags{TopicIDType: TopicShort}, MsgID: 5, TopicID: 'a'<<8 | 'b'},
		raw: []byte{
			0x07,       // Length 7
			0x12,       // MsgType SUBSCRIBE
			0x02,       // Flags: QoS 0, TopicIdType short
			0x00, 0x05, // MsgId 5
			'a', 'b', // short topic name "ab"
		},
	},
	{
		name: "suback",
		msg:  &Suback{Flags: Flags{QoS: QoS1}, TopicID: 6, MsgID: 3, ReturnCode: Accepted},
		raw: []byte{
			0x08,       // Length 8
			0x13,       // MsgType SUBACK
			0x20,       // Flags: granted QoS 1
			0x00, 0x06, // TopicId 6
			0x00, 0x03, // MsgId 3
			0x00, // ReturnCode accepted
		},
	},
	{
		name: "suback_wildcard",
		msg:  &Suback{Flags: Flags{QoS: QoS0}, TopicID: 0, MsgID: 3, ReturnCode: Accepted},
		raw: []byte{
			0x08,       // Length 8
			0x13,       // MsgType SUBACK
			0x00,       // Flags: granted QoS 0
			0x00, 0x00, // TopicId 0: wildcard filter
			0x00, 0x03, // MsgId 3
			0x00, // ReturnCode accepted
		},
	},
	{
		name: "unsubscribe_name",
		msg:  &Unsubscribe{MsgID: 7, TopicName: "a/#"},
		raw: []byte{
			0x08,       // Length 8
			0x14,       // MsgType UNSUBSCRIBE
			0x00,       // Flags: TopicIdType normal
			0x00, 0x07, // MsgId 7
			'a', '/', '#', // TopicName "a/#"
		},
	},
	{
		name: "unsubscribe_predefined",
		msg:  &Unsubscribe{Flags: Flags{TopicIDType: TopicPredefined}, MsgID: 8, TopicID: 2},
		raw: []byte{
			0x07,       // Length 7
			0x14,       // MsgType UNSUBSCRIBE
			0x01,       // Flags: TopicIdType predefined
			0x00, 0x08, // MsgId 8
			0x00, 0x02, // TopicId 2
		},
	},
	{
		name: "unsuback",
		msg:  &Unsuback{MsgID: 7},
		raw: []byte{
			0x04,       // Length 4
			0x15,       // MsgType UNSUBACK
			0x00, 0x07, // MsgId 7
		},
	},
	{
		name: "pingreq",
		msg:  &Pingreq{},
		raw: []byte{
			0x02, // Length 2
			0x16, // MsgType PINGREQ, no ClientId
		},
	},
	{
		name: "pingreq_wake",
		msg:  &Pingreq{ClientID: "dev1"},
		raw: []byte{
			0x06,               // Length 6
			0x16,               // MsgType PINGREQ
			'd', 'e', 'v', '1', // ClientId "dev1": a sleeping client wakes up
		},
	},
	{
		name: "pingresp",
		msg:  &Pingresp{},
		raw: []byte{
			0x02, // Length 2
			0x17, // MsgType PINGRESP
		},
	},
	{
		name: "disconnect",
		msg:  &Disconnect{},
		raw: []byte{
			0x02, // Length 2
			0x18, // MsgType DISCONNECT, no Duration
		},
	},
	{
		name: "disconnect_sleep",
		msg:  &Disconnect{Duration: 600, HasDuration: true},
		raw: []byte{
			0x04,       // Length 4
			0x18,       // MsgType DISCONNECT
			0x02, 0x58, // Duration 600 s: go to sleep
		},
	},
	{
		name: "willtopicupd",
		msg:  &WillTopicUpd{Flags: Flags{QoS: QoS2}, Topic: "w"},
		raw: []byte{
			0x04, // Length 4
			0x1A, // MsgType WILLTOPICUPD
			0x40, // Flags: QoS 2
			'w',  // WillTopic "w"
		},
	},
	{
		name: "willtopicupd_empty",
		msg:  &WillTopicUpd{},
		raw: []byte{
			0x02, // Length 2
			0x1A, // MsgType WILLTOPICUPD, empty: delete the will
		},
	},
	{
		name: "willtopicresp",
		msg:  &WillTopicResp{ReturnCode: NotSupported},
		raw: []byte{
			0x03, // Length 3
			0x1B, // MsgType WILLTOPICRESP
			0x03, // ReturnCode rejected: not supported
		},
	},
	{
		name: "willmsgupd",
		msg:  &WillMsgUpd{WillMsg: []byte("off")},
		raw: []byte{
			0x05,          // Length 5
			0x1C,          // MsgType WILLMSGUPD
			'o', 'f', 'f', // WillMsg "off"
		},
	},
	{
		name: "willmsgresp",
		msg:  &WillMsgResp{ReturnCode: Accepted},
		raw: []byte{
			0x03, // Length 3
			0x1D, // MsgType WILLMSGRESP
			0x00, // ReturnCode accepted
		},
	},
	{
		name: "encapsulated_pingreq",
		msg:  &Encapsulated{Ctrl: 0x01, WirelessNodeID: []byte{0xAB, 0xCD}, Inner: &Pingreq{}},
		raw: []byte{
			0x05,       // Length 5: the encapsulation header only
			0xFE,       // MsgType Encapsulated message
			0x01,       // Ctrl: radius 1
			0xAB, 0xCD, // WirelessNodeId (2 octets)
			0x02, // inner Length 2
			0x16, // inner MsgType PINGREQ
		},
	},
	{
		name: "encapsulated_publish",
		msg: &Encapsulated{WirelessNodeID: []byte{1, 2, 3, 4, 5, 6, 7, 8},
			Inner: &Publish{Flags: Flags{QoS: QoS1}, TopicID: 5, MsgID: 1, Data: []byte("v")}},
		raw: []byte{
			0x0B,                   // Length 11: the encapsulation header only
			0xFE,                   // MsgType Encapsulated message
			0x00,                   // Ctrl 0
			1, 2, 3, 4, 5, 6, 7, 8, // WirelessNodeId (8 octets, e.g. an EUI-64)
			0x08,       // inner Length 8
			0x0C,       // inner MsgType PUBLISH
			0x20,       // inner Flags: QoS 1
			0x00, 0x05, // inner TopicId 5
			0x00, 0x01, // inner MsgId 1
			'v', // inner Data "v"
		},
	},
}
