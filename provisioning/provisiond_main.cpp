// cairn-provisiond: at start, provisions the device's cloud identity (or keeps the stored one).
#include <iostream>

#include "provisioning/provision_cli.hpp"

int main(int argc, char** argv) {
    return cairn::provisioning::provisiond_main(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
