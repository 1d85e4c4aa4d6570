// Watches a config file, and the files it names, and calls back when their content changes
// (editors that write in place and editors that rename a new file over the old one are both
// seen). Polls the files' status once a period on its own thread and reads them once their status
// has stayed the same for a period (so a file is never read halfway through a write); the
// content hash decides, so a touch without a change is ignored.
#ifndef SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_
#define SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace switchyard::gateway {

class ConfigWatcher {
 public:
  // `on_change` runs on the watcher's thread, with the watcher, so that a reload can name the
  // files it read (Watch). `sources` are the files the config names (auth.key_file), watched
  // as the config is; `initial_version` is the loaded config's version (ConfigVersion).
  ConfigWatcher(std::string path, std::vector<std::string> sources, std::string initial_version,
                std::chrono::milliseconds period, std::function<void(ConfigWatcher&)> on_change);
  ~ConfigWatcher();  // stops and joins the thread

  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // After a reload (from a change or SIGHUP): the new config's sources and version.
  void Watch(std::vector<std::string> sources, std::string version);

 private:
  void Run();

  const std::string path_;
  const std::chrono::milliseconds period_;
  const std::function<void(ConfigWatcher&)> on_change_;
  absl::Mutex mu_;
  std::vector<std::string> sources_ ABSL_GUARDED_BY(mu_);
  std::string version_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_CONFIG_WATCHER_H_
