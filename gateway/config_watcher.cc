#include "gateway/config_watcher.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/time/time.h"
#include "gateway/hash.h"

namespace switchyard::gateway {

ConfigWatcher::ConfigWatcher(std::string path, std::string initial_version,
                             std::chrono::milliseconds period, std::function<void()> on_change)
    : path_(std::move(path)),
      version_(std::move(initial_version)),
      period_(period),
      on_change_(std::move(on_change)),
      thread_([this] { Run(); }) {}

ConfigWatcher::~ConfigWatcher() {
  stop_.Notify();
  thread_.join();
}

void ConfigWatcher::Run() {
  // Zero, so the first poll reads the file: an edit made between loading the config and this
  // thread's start is still seen (the content hash decides whether anything changed).
  struct stat last {};
  bool settling = false;
  while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(period_))) {
    struct stat now {};
    if (stat(path_.c_str(), &now) != 0) continue;  // mid-rename: look again next period
    const bool same = now.st_mtim.tv_sec == last.st_mtim.tv_sec &&
                      now.st_mtim.tv_nsec == last.st_mtim.tv_nsec &&
                      now.st_size == last.st_size && now.st_ino == last.st_ino;
    if (!same) {
      // Read only once the file has been quiet for a period, never halfway through a write.
      last = now;
      settling = true;
      continue;
    }
    if (!settling) continue;
    settling = false;
    std::ifstream in(path_, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    const std::string version = ContentHash(text.str());
    if (version == version_) continue;
    version_ = version;
    on_change_();
  }
}

}  // namespace switchyard::gateway
