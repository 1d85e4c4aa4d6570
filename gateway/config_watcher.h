// Watches a config file and calls back when its content changes (editors that write in place and
// editors that rename a new file over the old one are both seen). Polls the file's status once a
// period on its own thread and reads it once its status has stayed the same for a period (so a
// file is never read halfway through a write); the content hash decides, so a touch without a
// change is ignored.
#ifndef SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_
#define SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"

namespace switchyard::gateway {

class ConfigWatcher {
 public:
  // `on_change` runs on the watcher's thread. `initial_version` is the ContentHash of the text
  // already loaded.
  ConfigWatcher(std::string path, std::string initial_version, std::chrono::milliseconds period,
                std::function<void()> on_change);
  ~ConfigWatcher();  // stops and joins the thread

  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

 private:
  void Run();

  const std::string path_;
  std::string version_;
  const std::chrono::milliseconds period_;
  const std::function<void()> on_change_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_
