// The updater's D-Bus names, shared by cairn-updated and its clients.
//
// org.cairn.Updater1 at /org/cairn/Updater1 on the system bus, interface org.cairn.Updater1:
//   InstallBundle(s source, a{sv} options)   starts an install; options: "force" (b) allows a
//                                            downgrade, "reboot" (b) reboots after success.
//                                            Returns at once; Completed(i) ends it.
//   InstallBundleFd(h bundle, a{sv} options) the same from an open descriptor (a pipe: read once,
//                                            see Engine::install); `cairnctl update install -`.
//   Mark(s state, s slot) -> (s slot, s message)   state good|bad|active; slot booted|other|a|b
//   GetSlotStatus() -> a(sa{sv})             per slot: state, version, build_id, booted, bootable, next
//   GetStatus() -> s                         everything as JSON (slots, pending, last event, /etc conflicts,
//                                            save_error: why the state is only in memory, or null)
//   properties Operation (s: idle|installing|checking), Progress ((is) percent, message),
//              LastError (s), BootSlot (s), Compatible (s)
//   signal Completed(i result)               0 success, 1 failure (LastError says why)
// Errors: org.cairn.Updater1.Error.Busy (an install or health check runs), .BadOption, and
// .Failed with the reason for anything else; no error in a call ends the daemon.
#pragma once

namespace cairn::updater::dbus {
inline constexpr const char* service = "org.cairn.Updater1";
inline constexpr const char* object = "/org/cairn/Updater1";
inline constexpr const char* interface = "org.cairn.Updater1";
}  // namespace cairn::updater::dbus
