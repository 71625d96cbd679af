from sim_gpu.server import main

main()
