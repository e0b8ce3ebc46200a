#!/usr/bin/env bash
# Creates the secrets of the dcguard compose stack, once: random passwords, tokens and
# keys in secrets/ (next to compose.yaml, or under the directory given as $1), and the
# Mosquitto password file made from the two MQTT passwords. Existing files are kept, so
# running it again changes nothing; delete a file to rotate that secret.
#
#   deploy/container/init-secrets.sh            # then: docker compose up -d
#
# Needs `mosquitto_passwd`: the local one (Debian package mosquitto) when installed, else
# the one in the stack's Mosquitto image via docker or podman ($CONTAINER_ENGINE).
# Set MOSQUITTO_PASSWD to use a particular binary. tests/deploy.rs runs this script and
# starts Mosquitto with its output.
set -euo pipefail

readonly MOSQUITTO_IMAGE=docker.io/library/eclipse-mosquitto:2.0.20
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${1:-$here}
secrets=$base/secrets

die() {
    printf 'init-secrets.sh: %s\n' "$*" >&2
    exit 1
}

# 32 random bytes as 64 hex characters: no character any consumer could misread.
random_secret() {
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

umask 077
mkdir -p "$secrets"
chmod 0700 "$secrets"

# The files compose.yaml's `secrets:` names. Each is one line without a newline.
# They are mode 0644 inside the 0700 directory: the services read them as their own
# unprivileged users through bind mounts, while other users of the host cannot enter the
# directory.
for name in mqtt_dcguard_password mqtt_sensors_password influxdb_admin_password \
    influxdb_token grafana_admin_password dcguard_audit_key; do
    file=$secrets/$name
    if [[ ! -s $file ]]; then
        random_secret >"$file"
        echo "created secrets/$name"
    fi
    chmod 0644 "$file"
done

passwd_file=$secrets/mosquitto_passwd
if [[ ! -s $passwd_file ]]; then
    tmp=$secrets/.mosquitto_passwd.new
    : >"$tmp"
    chmod 0644 "$tmp"
    if [[ -n ${MOSQUITTO_PASSWD:-} ]]; then
        run_passwd() { "$MOSQUITTO_PASSWD" -b "$tmp" "$1" "$2"; }
    elif command -v mosquitto_passwd >/dev/null 2>&1; then
        run_passwd() { mosquitto_passwd -b "$tmp" "$1" "$2"; }
    else
        engine=${CONTAINER_ENGINE:-}
        if [[ -z $engine ]]; then
            if command -v docker >/dev/null 2>&1; then engine=docker
            elif command -v podman >/dev/null 2>&1; then engine=podman
            else die "no mosquitto_passwd, docker or podman: install one, or set MOSQUITTO_PASSWD"
            fi
        fi
        run_passwd() {
            "$engine" run --rm --user "$(id -u):$(id -g)" -v "$secrets:/work" "$MOSQUITTO_IMAGE" \
                mosquitto_passwd -b /work/.mosquitto_passwd.new "$1" "$2"
        }
    fi
    run_passwd dcguard "$(cat "$secrets/mqtt_dcguard_password")"
    run_passwd sensors "$(cat "$secrets/mqtt_sensors_password")"
    mv "$tmp" "$passwd_file"
    echo "created secrets/mosquitto_passwd (users dcguard, sensors)"
fi
chmod 0644 "$passwd_file"
echo "secrets in $secrets"
