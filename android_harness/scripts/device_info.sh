#!/bin/sh
# What `toolkit device run` checks before pushing anything, printed for one phone.
# Usage: ./device_info.sh [SERIAL]        (needs adb on PATH or $ADB)
set -eu
ADB=${ADB:-adb}
if [ $# -ge 1 ]; then S="-s $1"; else S=""; fi
command -v "$ADB" >/dev/null 2>&1 || { echo "adb not found: apt-get install adb, or pip install adbutils" >&2; exit 2; }
"$ADB" devices -l
sh_() { "$ADB" $S shell "$1"; }
echo "model:     $(sh_ 'getprop ro.product.model')"
echo "abi:       $(sh_ 'getprop ro.product.cpu.abi')   (runner ELF must match; see: file <runner>)"
echo "abilist:   $(sh_ 'getprop ro.product.cpu.abilist')"
echo "android:   $(sh_ 'getprop ro.build.version.release') (sdk $(sh_ 'getprop ro.build.version.sdk'))"
echo "taskset:   $(sh_ 'command -v taskset || which taskset || echo MISSING')"
echo "cores (index, max kHz): the toolkit pins to the fastest, highest index on ties"
sh_ 'for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "  ${c##*/cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)"; done'
echo "state: what every phone row records before and after its timed calls (toolkit/device/phone_state.py)"
echo "thermal:   $(sh_ 'dumpsys thermalservice 2>/dev/null | grep -E "Thermal Status" || echo "no thermalservice"') (0 none .. 6 shutdown)"
sh_ 'for z in /sys/class/thermal/thermal_zone*; do echo "  $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done 2>/dev/null | head -20'
echo "battery:   $(sh_ 'dumpsys battery 2>/dev/null | grep -E "level|status|AC powered|USB powered" | tr -s " " | tr "\n" " "')"
echo "governor (core, governor, current kHz):"
sh_ 'for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "  ${c##*/cpu} $(cat $c/cpufreq/scaling_governor 2>/dev/null) $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null)"; done' 
