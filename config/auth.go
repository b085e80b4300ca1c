package config

// Auth configures device authentication ([auth]), in Mosquitto's file formats.
type Auth struct {
	// PSKFile holds identity:hexkey lines for DTLS PSK (coaps).
	PSKFile string `toml:"psk_file"`
	// PasswordFile is a mosquitto_passwd file checking devices' username/password.
	PasswordFile string `toml:"password_file"`
	// ACLFile is a Mosquitto ACL file applied to devices.
	ACLFile string `toml:"acl_file"`
	// AllowAnonymous lets devices without credentials in; default true.
	AllowAnonymous *bool `toml:"allow_anonymous"`
}

// Anonymous reports whether devices without credentials are let in.
func (a Auth) Anonymous() bool { return a.AllowAnonymous == nil || *a.AllowAnonymous }
