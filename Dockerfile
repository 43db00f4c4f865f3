# chatrelayd in a container: build with the official Swift image, run on Debian slim.
# The build steps are the scripts CI runs (scripts/setup, scripts/build).
#   docker build -t chatrelayd .
#   docker run -v chatrelayd-run:/run/chatrelayd -v /etc/chatrelayd:/etc/chatrelayd:ro chatrelayd
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/setup --system \
 && scripts/build release --product chatrelayd --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/chatrelayd" /out/usr/bin/chatrelayd \
 && install -D -m 0644 etc/chatrelayd.yaml /out/etc/chatrelayd/chatrelayd.yaml \
 && cp -r Tests/Fixtures/cassettes /out/cassettes

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsystemd0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system chatrelay \
 && useradd --system --gid chatrelay --home-dir /var/lib/chatrelayd --shell /usr/sbin/nologin chatrelay \
 && install -d -o chatrelay -g chatrelay -m 0750 /run/chatrelayd /var/lib/chatrelayd
COPY --from=build /out/usr/bin/chatrelayd /usr/bin/chatrelayd
COPY --from=build /out/etc/chatrelayd /etc/chatrelayd
COPY --from=build /out/cassettes /usr/share/chatrelayd/cassettes
USER chatrelay
# The socket lives in a volume so that other containers (or the host) can reach it.
VOLUME ["/run/chatrelayd"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
  CMD curl -fsS --unix-socket /run/chatrelayd/gateway.sock http://localhost/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/chatrelayd"]
CMD ["serve", "--config", "/etc/chatrelayd/chatrelayd.yaml"]
