package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/gateway"
)

// runFlags are run's flags.
func runFlags() (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	file := fs.String("config", "config.toml", "the config `FILE`")
	fs.StringVar(file, "c", "config.toml", "the config `FILE`")
	return fs, file
}

func cmdRun(c *command, args []string, stdout, stderr io.Writer) int {
	fs, file := runFlags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q (the config is --config FILE)", fs.Arg(0))
	}
	cfg, ps := config.Load(*file)
	for _, p := range ps {
		fmt.Fprintln(stderr, p.Error())
	}
	if len(ps.Errors()) > 0 {
		return 1
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw: %v\n", err)
		return 1
	}
	defer log.Sync()
	g, err := gateway.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw: %v\n", err)
		return 1
	}
	g.Metrics().SetBuildInfo(version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads, as it does for Mosquitto; it must never end the process
	// (Go's default for SIGHUP is to exit, losing queued messages).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, hup, *file, g, log)
	log.Info("mqttgw starting", zap.String("version", version), zap.String("config", *file),
		zap.String("config_sha256", configDigest(*file)), zap.String("gateway", cfg.Gateway.ID))
	// Every socket is bound by New and Run reads them at once: ready for the
	// service manager (systemd Type=notify) now.
	notify(log, "READY=1")
	go func() {
		<-ctx.Done()
		notify(log, "STOPPING=1")
	}()
	if err := g.Run(ctx); err != nil {
		log.Error("gateway stopped", zap.Error(err))
		return 1
	}
	log.Info("mqttgw stopped")
	return 0
}

// reloadOnHUP re-reads the config file on each SIGHUP and hands it to the
// gateway; a file that fails to load leaves the running one in force, and every
// problem is logged with its FILE:LINE.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, file string, g *gateway.Gateway, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading", zap.String("config", file))
		notify(log, "RELOADING=1")
		cfg, ps := config.Load(file)
		for _, p := range ps {
			if p.Warning {
				log.Warn("reload: config", zap.String("problem", p.Error()))
			}
		}
		if errs := ps.Errors(); len(errs) > 0 {
			for _, p := range errs {
				log.Error("reload refused: config kept as it was", zap.String("problem", p.Error()))
			}
			notify(log, "READY=1") // still serving, on the old config
			continue
		}
		if err := g.Reload(ctx, cfg); err != nil {
			log.Error("reload refused: config kept as it was", zap.Error(err))
		}
		notify(log, "READY=1")
	}
}

// notify tells the service manager state; a failure is worth a warning only,
// since the gateway itself works.
func notify(log *zap.Logger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warn("service manager notification failed", zap.String("state", state), zap.Error(err))
	}
}

// newLogger builds the one zap logger that New passes down; repeated lines are
// sampled so that a flood of bad datagrams cannot flood the log.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if c.Format == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	core = zapcore.NewSamplerWithOptions(core, 1e9, 10, 100) // per second: first 10, then every 100th
	return zap.New(core), nil
}
