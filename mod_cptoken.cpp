// mod_cptoken: the Apache httpd module. Glue between httpd and lib/ only.
// (A loadable skeleton for now; the authentication hooks come next.)

#include "httpd.h"
#include "http_config.h"

extern "C" {
extern module AP_MODULE_DECLARE_DATA cptoken_module;
}

namespace {

void register_hooks(apr_pool_t *) {}

}  // namespace

extern "C" {
__attribute__((visibility("default"))) module AP_MODULE_DECLARE_DATA cptoken_module = {
    STANDARD20_MODULE_STUFF,
    nullptr,  // per-directory config creator
    nullptr,  // dir config merger
    nullptr,  // server config creator
    nullptr,  // server config merger
    nullptr,  // command table
    register_hooks,
    AP_MODULE_FLAG_NONE,
};
}
