# mqttgw container image: a static binary on a distroless base, run as a
# non-root user, with the example config (the embedded broker, so the image
# runs alone). Not built in CI.
#
#   docker build -t mqttgw .
#   docker run --rm -p 1883:1883 -p 1884:1884/udp -p 1885:1885/udp -p 5683:5683/udp mqttgw
#
# Mount your own config over /etc/mqttgw/config.toml; state (the [store] dir)
# goes to /var/lib/mqttgw.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/mqttgw ./cmd/mqttgw \
 && sed -e 's/127\.0\.0\.1:/0.0.0.0:/' config.toml.example > /out/config.toml \
 && /out/mqttgw check /out/config.toml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mqttgw /usr/bin/mqttgw
COPY --from=build /out/config.toml /etc/mqttgw/config.toml
USER nonroot:nonroot
WORKDIR /var/lib/mqttgw
EXPOSE 1883/tcp 1884/udp 1885/udp 5683/udp 9100/tcp
ENTRYPOINT ["/usr/bin/mqttgw"]
CMD ["run", "--config", "/etc/mqttgw/config.toml"]
