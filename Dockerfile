# weft-agent's image, for users with a container engine:
#   docker build -t weft-agent:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t weft-agent:0.1.0 .
# `cargo xtask image` builds the same image without an engine, and that archive is
# what the tests check; this file has not been run on the project's machine (no engine
# there). The build stage runs on the target platform (emulated under buildx for the
# other one), so it builds natively for that architecture.

FROM rust:1.95-bookworm AS build
# What `cargo xtask setup` installs for a build: LLVM 22 for bpf-linker, musl-gcc for
# ring's C in the static agent, and Debian's reference CNI plugins for the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends llvm-22-dev musl-tools containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/*
# `cargo xtask build-ebpf` checks for both components (clippy lints the eBPF crate).
RUN rustup toolchain install nightly-2026-05-19 --profile minimal --component rust-src --component clippy \
 && rustup target add "$(uname -m)-unknown-linux-musl"
RUN PATH="/usr/lib/llvm-22/bin:$PATH" cargo install bpf-linker --version 0.13.0 --locked \
      --no-default-features --features llvm-22
WORKDIR /src
COPY . .
# The eBPF object (the agent embeds it), then the static agent with the image profile.
RUN cargo xtask build-ebpf \
 && triple="$(uname -m)-unknown-linux-musl" \
 && env "CC_$(echo "$triple" | tr - _)=musl-gcc" \
      cargo build --locked --package weft-agent --bin weft-agent --profile image --target "$triple" \
 && mkdir -p /out/usr/local/bin /out/opt/bin /out/usr/lib/cni /out/usr/share/doc/containernetworking-plugins \
 && cp "target/$triple/image/weft-agent" /out/usr/local/bin/ \
 && ln -s ../../usr/local/bin/weft-agent /out/opt/bin/flanneld \
 && cp /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/lib/cni/loopback /out/usr/lib/cni/ \
 && cp /usr/share/doc/containernetworking-plugins/copyright /out/usr/share/doc/containernetworking-plugins/

# No shell, no libc: the init containers run `weft-agent mount-bpffs`,
# `install-cni-conf` and `install-cni-plugins`.
FROM scratch
COPY --from=build /out/ /
ENV PATH=/usr/local/bin:/opt/bin
LABEL org.opencontainers.image.title=weft-agent \
      org.opencontainers.image.version=0.1.0 \
      org.opencontainers.image.licenses=Apache-2.0
ENTRYPOINT ["/usr/local/bin/weft-agent"]
