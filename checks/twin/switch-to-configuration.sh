# shellcheck shell=sh
# shellcheck disable=SC2154 # toplevel: set by the header system.nix writes
# switch-to-configuration of a twin generation (see system.nix, which puts a
# header before this body setting `toplevel` and `install_boot_loader`).
#
# The part of nixpkgs' switch-to-configuration-ng
# (pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs) that concerns
# the units of this system, in POSIX sh for the Debian guest:
#
# - switch, boot: the boot loader (the evaluated installBootLoader, its words
#   run without a shell, the toplevel appended); a failure stops here.
# - switch, test: each active unit the previous system (/run/current-system)
#   or this one defines is compared, [Install] left out and drop-ins read
#   after the unit, as compare_units does:
#   - gone from this system: stopped, unless X-StopOnRemoval=false;
#   - only X-Reload-Triggers or a mount's Options changed: reloaded;
#   - changed otherwise (handle_modified_unit): a .mount is restarted, except
#     nix.mount and -.mount, which are reloaded; a .socket is left alone; a
#     service with X-ReloadIfChanged=true is reloaded, with
#     X-RestartIfChanged=false (or RefuseManualStop, X-OnlyManualStart) left
#     alone, with X-StopIfChanged=false (or any other non-service) restarted,
#     else stopped before the activation and started after it (its active
#     sockets instead, when socket-activated);
#   - an active target this system or the previous one hangs units on
#     (.wants, .requires, .upholds) is started again after the activation,
#     which starts the units new to it, as switch-to-configuration-ng does
#     with every active target.
#   Then: stop, activate ($toplevel/activate, which reloads systemd), reload,
#   restart, start, in that order.
#
# Not here: dry-activate, the lists kept in /run/nixos against interruption,
# systemd re-exec, fstab, user units, nspawn, the activation's own restart
# lists: nothing of the twin uses them.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

action=${1-}
case "$action" in
  switch | boot | test) ;;
  *)
    echo "Usage: $0 switch|boot|test" >&2
    exit 1
    ;;
esac

if [ "$action" = switch ] || [ "$action" = boot ]; then
  if ! install_boot_loader "$toplevel"; then
    echo "Failed to install bootloader" >&2
    exit 1
  fi
fi
[ "$action" = boot ] && exit 0

old=$(readlink -f /run/current-system 2>/dev/null || true)
oldunits=${old:+$old/etc/systemd/system}
newunits=$toplevel/etc/systemd/system
# Units the guest has from its packages, under the drop-ins of a system.
guestunits=/usr/lib/systemd/system

# Whether a system ($1: its units dir) defines unit $2 (whole, as a drop-in
# or masked).
defines() {
  [ -n "$1" ] && { [ -e "$1/$2" ] || [ -L "$1/$2" ] || [ -d "$1/$2.d" ]; }
}

# Whether unit $2 exists with system $1: its own, or the guest's (which a
# NixOS system would have from systemd.packages, in its units).
exists_with() {
  defines "$1" "$2" || [ -e "$guestunits/$2" ]
}

# Whether a system masks unit $2 (a link to /dev/null).
masks() {
  [ "$(readlink -f "$1/$2" 2>/dev/null)" = /dev/null ]
}

# The files systemd reads for unit $2 of a system: the unit (the guest's
# own when the system only adds drop-ins) and then its drop-ins.
unit_files() {
  if [ -e "$1/$2" ]; then
    echo "$1/$2"
  elif [ -e "$guestunits/$2" ]; then
    echo "$guestunits/$2"
  fi
  for f in "$1/$2.d"/*.conf; do
    [ -e "$f" ] && echo "$f"
  done
  true
}

# A unit as parse_unit reads it: one line per key, "Section<TAB>Key<TAB>
# values" (values joined by \037, an empty value clearing the earlier
# ones), plus "<TAB>Section" per section; [Install] left out.
normalize() {
  unit_files "$1" "$2" | while IFS= read -r f; do cat "$f"; echo; done | awk '
    /^[ \t]*[#;]/ || /^[ \t]*$/ { next }
    /^[ \t]*\[.*\][ \t]*$/ {
      sec = $0; sub(/^[ \t]*\[/, "", sec); sub(/\][ \t]*$/, "", sec)
      if (sec != "Install") sections[sec] = 1
      next
    }
    sec == "Install" { next }
    {
      i = index($0, "="); if (i == 0) next
      k = substr($0, 1, i - 1); v = substr($0, i + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
      if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      id = sec "\t" k
      if (v == "") val[id] = ""
      else if (id in val && val[id] != "") val[id] = val[id] "\037" v
      else val[id] = v
    }
    END {
      for (s in sections) print "\t" s
      for (id in val) print id "\t" val[id]
    }
  ' | sort
}

# The last value of key $4 in section $3 of unit $2, or "".
unit_value() {
  normalize "$1" "$2" | awk -F '\t' -v s="$3" -v k="$4" '
    $1 == s && $2 == k { n = split($3, a, "\037"); print a[n] }'
}

# A systemd boolean of a unit, with a default ($5).
unit_bool() {
  case "$(unit_value "$1" "$2" "$3" "$4")" in
    1 | yes | true | on) echo true ;;
    "") echo "$5" ;;
    *) echo false ;;
  esac
}

# compare_units: equal, reload or restart.
compare() {
  a=$(mktemp)
  b=$(mktemp)
  normalize "$oldunits" "$1" >"$a"
  normalize "$newunits" "$1" >"$b"
  awk -F '\t' '
    BEGIN {
      n = split("X-Reload-Triggers Description Documentation OnFailure OnSuccess OnFailureJobMode IgnoreOnIsolate StopWhenUnneeded RefuseManualStart RefuseManualStop AllowIsolate CollectMode SourcePath", l, " ")
      for (i = 1; i <= n; i++) ignored[l[i]] = 1
      ret = "equal"
    }
    FNR == NR { if ($1 == "") osec[$2] = 1; else old[$1 "\t" $2] = $3; next }
    { if ($1 == "") nsec[$2] = 1; else new[$1 "\t" $2] = $3 }
    END {
      for (s in osec) if (!(s in nsec) && s != "Unit") { print "restart"; exit }
      for (s in nsec) if (!(s in osec) && s != "Unit") { print "restart"; exit }
      for (id in old) {
        split(id, p, "\t")
        if (!(id in new)) {
          if (p[1] == "Unit" && (p[2] in ignored)) continue
          print "restart"; exit
        }
        if (old[id] == new[id]) continue
        if (p[1] == "Unit" && p[2] == "X-Reload-Triggers") { ret = "reload"; continue }
        if (p[1] == "Unit" && (p[2] in ignored)) continue
        if (p[1] == "Mount" && p[2] == "Options") { ret = "reload"; continue }
        print "restart"; exit
      }
      for (id in new) {
        if (id in old) continue
        split(id, p, "\t")
        if (p[1] == "Unit" && p[2] == "X-Reload-Triggers") { ret = "reload"; continue }
        if (p[1] == "Unit" && (p[2] in ignored)) continue
        print "restart"; exit
      }
      print ret
    }
  ' "$a" "$b"
  rm -f "$a" "$b"
}

# active or activating (the units switch-to-configuration-ng handles).
is_active() {
  case "$(systemctl show -P ActiveState -- "$1" 2>/dev/null)" in
    active | activating) return 0 ;;
    *) return 1 ;;
  esac
}

# Unit names a system ($1) defines, one a line (.wants etc. left out).
unit_names() {
  [ -n "$1" ] && [ -d "$1" ] || return 0
  for path in "$1"/*; do
    [ -e "$path" ] || [ -L "$path" ] || continue
    unit=${path##*/}
    case "$unit" in
      *.wants | *.requires | *.upholds) ;;
      *.d) echo "${unit%.d}" ;;
      *) echo "$unit" ;;
    esac
  done
}

# Targets a system ($1) hangs units on.
target_names() {
  [ -n "$1" ] && [ -d "$1" ] || return 0
  for path in "$1"/*.wants "$1"/*.requires "$1"/*.upholds; do
    [ -d "$path" ] || continue
    unit=${path##*/}
    echo "${unit%.*}"
  done
}

to_stop=
to_start=
to_restart=
to_reload=
to_skip=
add() {
  eval "case \" \$$1 \" in *\" $2 \"*) ;; *) $1=\"\$$1 $2\" ;; esac"
}

for unit in $({ unit_names "$oldunits"; unit_names "$newunits"; } | sort -u); do
  is_active "$unit" || continue
  # Only what the previous system defined can have changed or gone.
  defines "$oldunits" "$unit" || continue
  if ! exists_with "$newunits" "$unit" || masks "$newunits" "$unit"; then
    if [ "$(unit_bool "$oldunits" "$unit" Unit X-StopOnRemoval true)" = true ]; then
      add to_stop "$unit"
    fi
    continue
  fi
  case "$unit" in
    *.target)
      add to_start "$unit"
      continue
      ;;
  esac
  case "$(compare "$unit")" in
    equal) continue ;;
    reload)
      add to_reload "$unit"
      continue
      ;;
  esac
  # handle_modified_unit
  case "$unit" in
    *.slice) ;;
    -.mount | nix.mount) add to_reload "$unit" ;;
    *.mount) add to_restart "$unit" ;;
    *.socket) ;;
    *)
      if [ "$(unit_bool "$newunits" "$unit" Service X-ReloadIfChanged false)" = true ]; then
        add to_reload "$unit"
      elif [ "$(unit_bool "$newunits" "$unit" Service X-RestartIfChanged true)" = false ] ||
        [ "$(unit_bool "$newunits" "$unit" Unit RefuseManualStop false)" = true ] ||
        [ "$(unit_bool "$newunits" "$unit" Unit X-OnlyManualStart false)" = true ]; then
        add to_skip "$unit"
      elif [ "$(unit_bool "$newunits" "$unit" Service X-StopIfChanged true)" = false ] ||
        [ "${unit%.service}" = "$unit" ]; then
        add to_restart "$unit"
      else
        socket_activated=false
        sockets=$(unit_value "$newunits" "$unit" Service Sockets | tr '\037' ' ')
        [ -n "$sockets" ] || sockets=${unit%.service}.socket
        for socket in $sockets; do
          is_active "$socket" || continue
          add to_stop "$socket"
          if exists_with "$newunits" "$socket"; then
            add to_start "$socket"
            socket_activated=true
          fi
        done
        if [ "$(unit_bool "$newunits" "$unit" Service X-NotSocketActivated false)" = true ]; then
          socket_activated=false
        fi
        [ "$socket_activated" = true ] || add to_start "$unit"
        add to_stop "$unit"
      fi
      ;;
  esac
done

# Every active target either system hangs units on, started again: the
# units new to it start (switch-to-configuration-ng starts all active
# targets; the guest's targets are Debian's, not in a system's units).
for target in $({ target_names "$oldunits"; target_names "$newunits"; } | sort -u); do
  is_active "$target" && add to_start "$target"
done

status=0

if [ -n "$to_stop" ]; then
  echo "stopping the following units:$to_stop" >&2
  # shellcheck disable=SC2086 # unit names, no blanks
  systemctl stop -- $to_stop || status=4
fi
if [ -n "$to_skip" ]; then
  echo "NOT restarting the following changed units:$to_skip" >&2
fi

"$toplevel/activate" || status=2

if [ -n "$to_reload" ]; then
  echo "reloading the following units:$to_reload" >&2
  # shellcheck disable=SC2086
  systemctl reload -- $to_reload || status=4
fi
if [ -n "$to_restart" ]; then
  echo "restarting the following units:$to_restart" >&2
  # shellcheck disable=SC2086
  systemctl restart -- $to_restart || status=4
fi
if [ -n "$to_start" ]; then
  echo "starting the following units:$to_start" >&2
  # shellcheck disable=SC2086
  systemctl start -- $to_start || status=4
fi

exit $status
