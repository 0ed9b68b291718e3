#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan driver that runs on the CPU) when no Vulkan driver is
# present, so the wgpu backend's tests have an adapter on a machine without a GPU.
set -euo pipefail
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing mesa-vulkan-drivers libvulkan1 (lavapipe)" >&2
($sudo apt-get update -qq && $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1) >&2
