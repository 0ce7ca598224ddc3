#include <cstdio>
int main() { std::puts("cairn: under construction"); return 1; }
