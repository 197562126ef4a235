# Shared helpers of the shell scripts (sourced, never run): logging, Debian packages, the Debian
# mirror apt uses, and a Go toolchain. Nothing here names a package registry: downloads go through
# apt, npm and the go command, each with its own configuration (sources.list, npm's registry
# setting, GOPROXY), so a mirror configured there is what we use.
#
# The sourcing script sets LOG_TAG (the [prefix] of its messages) and CACHE (the .cache folder).

log() { printf '[%s] %s\n' "${LOG_TAG:-parley}" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "${LOG_TAG:-parley}" "$*" >&2
  exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }

# apt_install PKG... : installs Debian packages (root only), `apt-get update` once per process.
# Output goes to APT_LOG (default: stderr on failure only).
APT_UPDATED=0
apt_install() {
  local logfile=${APT_LOG:-$(mktemp)}
  is_root && command -v apt-get >/dev/null || die "missing $*; run: sudo apt-get install -y --no-install-recommends $*"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  if ((APT_UPDATED == 0)); then
    timeout 900 apt-get update -qq </dev/null >>"$logfile" 2>&1 9>&- || {
      tail -n 20 "$logfile" >&2
      die "apt-get update failed"
    }
    APT_UPDATED=1
  fi
  timeout 1800 apt-get install -y -qq --no-install-recommends "$@" </dev/null >>"$logfile" 2>&1 9>&- || {
    tail -n 30 "$logfile" >&2
    die "apt-get install $* failed"
  }
}

# need_tools CMD:PACKAGE... : installs the packages whose command is missing
need_tools() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

# debian_mirror SUITE : the mirror apt already uses for SUITE (deb822 .sources or one-line .list
# files); PARLEY_DEBIAN_MIRROR overrides it
debian_mirror() {
  local suite=$1 mirror
  if [[ -n ${PARLEY_DEBIAN_MIRROR:-} ]]; then
    echo "$PARLEY_DEBIAN_MIRROR"
    return 0
  fi
  mirror=$(
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
      # stanzas are separated by blank lines; take the first URI of a "deb" stanza listing SUITE
      awk -v suite="$suite" '
        function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1; exit } types = suites = uri = "" }
        /^[ \t]*$/ { flush(); next }
        /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
        /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
        /^URIs:/   { uri = $2 }
        END { if (!found) flush() }
      ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      # deb [options] URI SUITE COMPONENTS...
      awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
  )
  mirror=$(head -n 1 <<<"$mirror")
  [[ -n $mirror ]] || die "apt has no source for Debian $suite (set PARLEY_DEBIAN_MIRROR)"
  echo "$mirror"
}

# ------------------------------------------------------------------------------------------ Go

# The toolchain fetched when the machine has no Go new enough; newer requirements of a module are
# then fetched by the go command itself (GOTOOLCHAIN=auto).
GO_TOOLCHAIN=${PARLEY_GO_TOOLCHAIN:-go1.26.8}

go_minor() { # GO : the minor version of that go command (go1.MINOR...)
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go1.}
  v=${v%%[!0-9]*}
  [[ -n $v ]] && echo "$v"
}

# go_bin : prints a go command of at least 1.21 (which fetches newer toolchains on demand). Without
# one, installs Debian's golang-go only to run `go mod download` of the official toolchain module
# golang.org/toolchain through the proxy that go is configured with, and keeps it in CACHE/go.
go_bin() {
  local g minor arch dir tmp json
  for g in "${PARLEY_GO:-}" "$(command -v go || true)" /usr/local/go/bin/go "$CACHE/go/bin/go"; do
    [[ -n $g && -x $g ]] || continue
    minor=$(go_minor "$g") || continue
    if ((minor >= 21)); then
      echo "$g"
      return 0
    fi
  done
  case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "no Go toolchain for $(uname -m); install Go >= 1.21" ;;
  esac
  g=$(command -v go || true)
  if [[ -z $g ]]; then
    [[ -x /usr/lib/go/bin/go ]] || apt_install golang-go ca-certificates
    g=/usr/lib/go/bin/go
    [[ -x $g ]] || g=$(command -v go) || die "golang-go installed no go command"
  fi
  log "fetching the Go toolchain $GO_TOOLCHAIN with $($g env GOVERSION) (go mod download)"
  tmp=$(mktemp -d)
  json=$(cd "$tmp" && GO111MODULE=on GOFLAGS=-modcacherw GOPATH=$tmp/gopath "$g" mod download -json \
    "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch") || {
    rm -rf "$tmp"
    die "could not download the Go toolchain module: $json"
  }
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [[ -d $dir ]] || die "go mod download printed no module folder: $json"
  rm -rf "$CACHE/go"
  mkdir -p "$CACHE"
  cp -a "$dir" "$CACHE/go"
  rm -rf "$tmp"
  # module zips carry no file modes
  chmod -R u+w "$CACHE/go"
  chmod +x "$CACHE/go/bin/"* "$CACHE/go/pkg/tool/"*/*
  "$CACHE/go/bin/go" version >/dev/null || die "the downloaded Go toolchain does not run"
  echo "$CACHE/go/bin/go"
}

# go_module_dir MODULE@VERSION : a writable copy of that module's source in CACHE/src (go mod
# download: works where the proxy refuses the version list that `go install m@v` asks for)
go_module_dir() {
  local spec=$1 go json dir dest=$CACHE/src/${1//[\/@]/_}
  if [[ -f $dest.ok ]]; then
    echo "$dest"
    return 0
  fi
  go=$(go_bin)
  json=$(cd "$(mktemp -d)" && GOFLAGS=-modcacherw "$go" mod download -json "$spec") ||
    die "go mod download $spec failed: $json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [[ -d $dir ]] || die "go mod download $spec printed no module folder: $json"
  rm -rf "$dest" "$dest.ok"
  mkdir -p "$CACHE/src"
  cp -a "$dir" "$dest"
  chmod -R u+w "$dest"
  touch "$dest.ok"
  echo "$dest"
}
