#include "imager/provisioning.hpp"

#include "imager/device_agent.hpp"

namespace cairn::imager {

std::string provisiond_run_script() {
    return "#!/bin/sh\n"
           "# The provisioning agent (written by `cairn build` from the recipe's [provisioning]): it\n"
           "# provisions at start and again on SIGHUP, which `cairnctl config apply` sends once it has\n"
           "# installed a new /etc/cairn/config.toml. Without a config.toml it waits for one.\n"
           "[ -d /run/cairn ] || mkdir -p /run/cairn\n"
           "echo $$ > /run/cairn/provisiond.pid.new && mv /run/cairn/provisiond.pid.new /run/cairn/provisiond.pid\n"
           "again=1 sleeper=\n"
           "trap 'again=1; [ -n \"$sleeper\" ] && kill $sleeper 2>/dev/null' HUP\n"
           "while :; do\n"
           "  if [ $again = 1 ]; then\n"
           "    again=0\n"
           "    if [ -s /etc/cairn/config.toml ]; then\n"
           "      for wait in $(seq 60); do ip route | grep -q '^default' && break; sleep 1; done\n"
           "      if /usr/sbin/cairn-provisiond; then echo \"cairn: provisioning done\"; else echo \"cairn: provisioning failed\"; fi\n"
           "    fi\n"
           "  fi\n"
           "  sleep 2147483647 & sleeper=$!\n"
           "  [ $again = 1 ] || wait $sleeper   # a SIGHUP while provisioning: at once\n"
           "  kill $sleeper 2>/dev/null; sleeper=\n"
           "done\n";
}

void add_provisioning_files(Tree& tree, const Recipe& recipe) {
    DeviceAgent agent;
    agent.program = "cairn-provisiond";
    agent.build_folder = "provisioning";
    agent.image_path = provisioning_paths::agent;
    agent.cli_program = "cairnctl-provision";
    agent.cli_path = provisioning_paths::cli;
    agent.config = recipe.provisioning.config;
    agent.config_path = provisioning_paths::config;
    agent.run_path = provisioning_paths::run;
    agent.run_script = provisiond_run_script();
    add_device_agent(tree, agent, recipe.provisioning.where);
}

}  // namespace cairn::imager
