// The API keys qpoold holds (daemon/auth): read from files and variables, trimmed, reloaded when a
// file changes, the previous key kept when the new file is unusable, the read-only key for reads.
#include "daemon/auth/api_keys.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ApiKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpool_keys_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  // Writes `text` to `name` the way a Secret update does: a new file renamed over the old.
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path + ".tmp") << text;
    std::rename((path + ".tmp").c_str(), path.c_str());
    return path;
  }
  std::string dir_;
};

TEST_F(ApiKeysTest, FileKeyIsTrimmedAndReadOnlyKeyServesReads) {
  config::Config config;
  config.upstream.api_key_file = Write("full", "full-key\n");
  config.upstream.read_only_api_key_file = Write("ro", "  ro-key \r\n");
  auto store = ApiKeyStore::Create(config);
  ASSERT_TRUE(store.ok()) << store.status();
  std::shared_ptr<const ApiKeys> keys = (*store)->Current();
  EXPECT_EQ(keys->full, "full-key");
  EXPECT_EQ(keys->read_only, "ro-key");
  EXPECT_EQ(keys->For(/*read=*/true), "ro-key");
  EXPECT_EQ(keys->For(/*read=*/false), "full-key");
  EXPECT_TRUE((*store)->applies_to_calls());
  EXPECT_EQ((*store)->mode(), KeyMode::kIfAbsent);
}

TEST_F(ApiKeysTest, WithoutReadOnlyKeyReadsUseTheFullKey) {
  ApiKeys keys{"full", ""};
  EXPECT_EQ(keys.For(true), "full");
}

TEST_F(ApiKeysTest, ChangedFileIsReloadedAndCallsSeeTheNewGeneration) {
  config::Config config;
  config.upstream.api_key_file = Write("full", "one\n");
  auto store = ApiKeyStore::Create(config);
  ASSERT_TRUE(store.ok());
  ApiKeyCache cache(**store);
  EXPECT_EQ(cache.Get().full, "one");
  std::shared_ptr<const ApiKeys> held = (*store)->Current();  // a call in flight
  EXPECT_FALSE((*store)->Reload());                           // nothing changed
  Write("full", "two\n");
  EXPECT_TRUE((*store)->Reload());
  EXPECT_EQ(cache.Get().full, "two");
  EXPECT_EQ(held->full, "one");  // the snapshot a call holds does not change under it
}

TEST_F(ApiKeysTest, EmptyOrMissingFileKeepsThePreviousKey) {
  config::Config config;
  config.upstream.api_key_file = Write("full", "kept-key");
  auto store = ApiKeyStore::Create(config);
  ASSERT_TRUE(store.ok());
  Write("full", "\n");
  EXPECT_FALSE((*store)->Reload());
  EXPECT_EQ((*store)->Current()->full, "kept-key");
  std::remove(config.upstream.api_key_file.c_str());
  EXPECT_FALSE((*store)->Reload());
  EXPECT_EQ((*store)->Current()->full, "kept-key");
  Write("full", "next-key");
  EXPECT_TRUE((*store)->Reload());
  EXPECT_EQ((*store)->Current()->full, "next-key");
}

TEST_F(ApiKeysTest, StartFailsOnAMissingOrEmptyKeyWithoutQuotingIt) {
  config::Config config;
  config.upstream.api_key_file = dir_ + "/absent";
  auto missing = ApiKeyStore::Create(config);
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("absent"));

  config.upstream.api_key_file = Write("bad", "secret-with\x01control");
  auto bad = ApiKeyStore::Create(config);
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), Not(HasSubstr("secret-with")));

  config.upstream.api_key_file.clear();
  config.upstream.api_key_env = "QPOOL_TEST_UNSET_KEY_VARIABLE";
  auto unset = ApiKeyStore::Create(config);
  EXPECT_THAT(std::string(unset.status().message()), HasSubstr("QPOOL_TEST_UNSET_KEY_VARIABLE"));
}

TEST_F(ApiKeysTest, EnvironmentKeyAndOverrideMode) {
  ::setenv("QPOOL_TEST_API_KEY", "env-key", 1);
  config::Config config;
  config.upstream.api_key_env = "QPOOL_TEST_API_KEY";
  config.upstream.api_key_mode = "override";
  auto store = ApiKeyStore::Create(config);
  ::unsetenv("QPOOL_TEST_API_KEY");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Current()->full, "env-key");
  EXPECT_EQ((*store)->mode(), KeyMode::kOverride);
}

TEST_F(ApiKeysTest, DeprecatedHealthKeyServesProbesOnly) {
  ::setenv("QPOOL_TEST_HEALTH_KEY", "probe-key", 1);
  config::Config config;
  config.health.api_key_env = "QPOOL_TEST_HEALTH_KEY";
  auto store = ApiKeyStore::Create(config);
  ::unsetenv("QPOOL_TEST_HEALTH_KEY");
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->Current()->full, "probe-key");
  EXPECT_FALSE((*store)->applies_to_calls());
}

}  // namespace
}  // namespace qpool::auth
