#!/bin/sh
# Mod fix-qwen3.6-chat-template: install this folder's chat_template.jinja as
# $WORKSPACE_DIR/fixed_chat_template.jinja, the file the Qwen3.6 recipes pass to --chat-template.
# Runs as root from the mod's own folder. Safe to run again.
set -eu

mod=fix-qwen3.6-chat-template
target_name=fixed_chat_template.jinja

fail() {
    echo "$mod: ERROR: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
source_file="$here/chat_template.jinja"

[ -n "${WORKSPACE_DIR:-}" ] ||
    fail "WORKSPACE_DIR is not set; it must name the image's working directory (e.g. /workspace/vllm)"
[ -d "$WORKSPACE_DIR" ] ||
    fail "WORKSPACE_DIR '$WORKSPACE_DIR' is not a directory"
[ -f "$source_file" ] ||
    fail "template '$source_file' is missing from the mod folder"

target="$WORKSPACE_DIR/$target_name"

if [ -f "$target" ] && cmp -s "$source_file" "$target"; then
    echo "$mod: $target is already up to date; nothing to do"
    exit 0
fi

# Write next to the target, then rename, so a reader never sees half a file.
staging="$target.partial.$$"
trap 'rm -f "$staging"' EXIT
cp "$source_file" "$staging"
chmod 0644 "$staging"
mv -f "$staging" "$target"
trap - EXIT
echo "$mod: installed $target"
