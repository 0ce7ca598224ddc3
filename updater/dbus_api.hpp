// The updater's D-Bus names, shared by cairn-updated and its clients.
//
// org.cairn.Updater1 at /org/cairn/Updater1 on the system bus, interface org.cairn.Updater1:
//   InstallBundle(s source, a{sv} options)   starts an install; source: a path, or an http(s)://
//                                            URL the daemon fetches (Engine::install_url); options:
//                                            "force" (b) allows a downgrade, "reboot" (b) reboots
//                                            after success. Returns at once; Completed ends it. An
//                                            install from a URL leaves what moved in GetStatus's
//                                            last.transfer.
//   InstallBundleFd(h bundle, a{sv} options) the same from an open descriptor (a pipe: read once,
//                                            see Engine::install); `cairnctl update install -`.
//   Mark(s state, s slot) -> (s slot, s message)   state good|bad|active; slot booted|other|a|b
//   GetSlotStatus() -> a(sa{sv})             per slot: state (unknown|good|bad|installing|trial),
//                                            version, build_id, booted, bootable, primary, next
//   GetStatus() -> s                         everything as JSON (slots, pending, last event with its
//                                            code, /etc conflicts, save_error: why the state is only
//                                            in memory, or null); the status file's shape (status.hpp),
//                                            and "channel" (channel.json) when the device follows one
//   CheckChannel()                           checks the channel update.toml [channel] names now (a
//                                            newer version is installed as the channel says); returns at
//                                            once, Completed ends it, GetStatus's "channel" says what it
//                                            found. BadOption when the device follows no channel.
//   properties Operation (s: idle|installing|checking|checking-channel), Progress ((is) percent, message: the
//              install's step first, "write: root_b"), LastError (s), LastErrorCode (s: the
//              code of LastError, "" when it is empty), BootSlot (s), Compatible (s)
//   signal Completed(i result, s code, s message)   an install or health check ended: result 0
//              success (code and message ""), 1 failure; code one of updater/error_code.hpp's
//              names (bad-signature, incompatible, io, ...); message the reason, as LastError.
//              Earlier daemons sent only (i result); the result stays first, so a client that
//              reads just that still works, and cairnctl reads a missing code as "".
// Errors: org.cairn.Updater1.Error.Busy (an install or health check runs: code busy),
// .BadOption (code bad-option), and .Failed with the reason for anything else; no error in a call
// ends the daemon.
#pragma once

namespace cairn::updater::dbus {
inline constexpr const char* service = "org.cairn.Updater1";
inline constexpr const char* object = "/org/cairn/Updater1";
inline constexpr const char* interface = "org.cairn.Updater1";
}  // namespace cairn::updater::dbus
