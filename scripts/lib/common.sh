# shellcheck shell=bash
# Helpers shared by the scripts under scripts/. Source it; it defines functions only.

# A section header, so that a long CI log can be skimmed.
section() { printf '\n== %s ==\n' "$*"; }

note() { printf '%s\n' "$*"; }

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# True when this shell may run commands as root: it is root, or sudo works without a
# password (as on GitHub's runners). Never prompts: CI has no stdin.
can_be_root() {
    [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null
}

# Runs a command as root, through `sudo -n` when this shell is not root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

# True when a Docker daemon answers the docker client within a few seconds. The timeout
# matters: a client pointed at a wedged daemon can otherwise hang for minutes.
docker_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

# Where dockerd is, also when PATH lacks the sbin directories (as a user's PATH on Debian
# does); prints nothing and fails when it is not installed.
dockerd_path() {
    command -v dockerd 2>/dev/null && return 0
    local p
    for p in /usr/sbin/dockerd /usr/bin/dockerd /usr/local/sbin/dockerd /usr/local/bin/dockerd; do
        [ -x "$p" ] && { printf '%s\n' "$p"; return 0; }
    done
    return 1
}
